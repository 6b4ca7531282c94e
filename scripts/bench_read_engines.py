"""Issue 25's reader table: plane latency with the main thread idle or busy, and CPU per plane.

S1's array (200x1024x1024 uint16, chunks 1x512x512: four chunk requests a plane) is served by
``ZarrHTTPServer`` at ``--latency`` (100 ms) a request, in a process of its own so that its Python
does not compete with the reader's for the GIL. One reader at a time reads a batch of
``--planes`` planes with four plane reads in flight (four worker threads, each reading its next
plane as soon as its last one is in), while the main thread is either idle or busy (``--busy-ms``
of pure Python every ``--period-ms``, as napari's main thread during a drag).

Readers, every one awaited on zarr's asyncio loop:

- ``zarr+fsspec`` / ``zarr+obstore``: the slicer's path with zarr-python, ``_reading.read``
  through a ``ReadQueue`` (no chunk cache): each chunk ``async_array.getitem`` on zarr's loop,
  queued, retried and timed per chunk;
- ``tensorstore``: the same path with the queue's ``Env`` holding a ``TensorstoreEngine``: the
  queue's chunk reads, a plane's started together being one tensorstore read
  (``TensorstoreSource``);
- ``tensorstore (1 future)``: the array opened in tensorstore and read a plane at a time as one
  future, outside the queue (no progress, no cancellation of queued requests; for comparison).
- ``tensorstore (4 futures)`` (not in the default list): the plane's four quarters as four
  tensorstore futures awaited one after the other, outside the queue, not assembled (its first
  quarter is returned): against one future, what more calls from tensorstore into Python cost.

Per reader and main-thread mode, per repetition: the median plane latency of the batch, and the
reader's CPU per plane (process CPU time minus the main thread's, over the planes read). The
table gives the median over ``--reps`` repetitions (readers interleaved within each repetition,
so ratios compare like with like) and the spread (min-max of the repetitions' medians).

    PYTHONPATH=src .venv/bin/python scripts/bench_read_engines.py --reps 12 --out read_engines.json
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

IN_FLIGHT = 4
#: Never wait longer than this for one batch (a stuck reader ends the run, it does not hang it).
BATCH_TIMEOUT_S = 120.0


class Busy:
    """The main thread's load: ``busy_ms`` of pure Python every ``period_ms`` until ``done``."""

    def __init__(self, busy_ms: float, period_ms: float) -> None:
        self.busy = busy_ms / 1000
        self.period = period_ms / 1000

    def run_until(self, done: Callable[[], bool], deadline: float) -> None:
        while not done() and time.monotonic() < deadline:
            start = time.perf_counter()
            x = 0
            while time.perf_counter() - start < self.busy:
                for i in range(200):  # pure Python: holds the GIL but for switch-interval drops
                    x += i * i
            rest = self.period - (time.perf_counter() - start)
            if rest > 0:
                time.sleep(rest)


def idle_until(done: Callable[[], bool], deadline: float) -> None:
    while not done() and time.monotonic() < deadline:
        time.sleep(0.005)


def make_readers(url: str, names: list[str]) -> dict[str, Callable[[int], np.ndarray]]:
    """Name -> ``read(plane)``, blocking, called from a worker thread."""
    from napari_async_slicing._napari_compat import zarr_event_loop
    from napari_async_slicing._reading import Env, ReadContext, ReadQueue, read, reading
    from napari_async_slicing._reading._tensorstore import TensorstoreEngine, awaited
    from napari_async_slicing._reading._tensorstore_spec import spec_for
    from napari_async_slicing.testing import open_remote_array

    loop = zarr_event_loop()
    readers: dict[str, Callable[[int], np.ndarray]] = {}

    def queued_reader(kind: str, engine: TensorstoreEngine | None) -> Callable[[int], np.ndarray]:
        array = open_remote_array(url, store=kind)
        queue = ReadQueue(None, read_timeout=10.0, env=Env(tensorstore=engine))

        def read_plane(plane: int) -> np.ndarray:
            with reading(ReadContext(queue=queue)):
                return read(array, (plane,))

        read_plane.engine = engine  # kept alive with the reader
        return read_plane

    def one_future_reader() -> Callable[[int], np.ndarray]:
        import tensorstore as ts

        engine = TensorstoreEngine(read_timeout=10.0)
        store = ts.open(spec_for(open_remote_array(url)), context=engine._context, read=True).result()

        def read_plane(plane: int) -> np.ndarray:
            return asyncio.run_coroutine_threadsafe(awaited(store[plane].read()), loop).result(
                BATCH_TIMEOUT_S
            )

        read_plane.engine = engine
        return read_plane

    def four_futures_reader() -> Callable[[int], np.ndarray]:
        import tensorstore as ts

        engine = TensorstoreEngine(read_timeout=10.0)
        store = ts.open(spec_for(open_remote_array(url)), context=engine._context, read=True).result()
        height, width = store.shape[1:]
        halves = [(y, x) for y in (0, height // 2) for x in (0, width // 2)]

        async def chunks(plane: int) -> np.ndarray:
            reads = [store[plane, y : y + height // 2, x : x + width // 2].read() for y, x in halves]
            for chunk in reads:  # awaited one after the other, as a turn's reads were settled
                if not chunk.done():
                    await awaited(chunk)
            return reads[0].result()  # not assembled: only the calls into Python differ

        def read_plane(plane: int) -> np.ndarray:
            return asyncio.run_coroutine_threadsafe(chunks(plane), loop).result(BATCH_TIMEOUT_S)

        read_plane.engine = engine
        return read_plane

    makers = {
        'zarr+fsspec': lambda: queued_reader('fsspec', None),
        'zarr+obstore': lambda: queued_reader('obstore', None),
        'tensorstore': lambda: queued_reader('fsspec', TensorstoreEngine(read_timeout=10.0)),
        'tensorstore (1 future)': one_future_reader,
        'tensorstore (4 futures)': four_futures_reader,
    }
    for name in names:
        readers[name] = makers[name]()
    return readers


def batch(
    read: Callable[[int], np.ndarray],
    planes: list[int],
    pool: concurrent.futures.Executor,
    main: Callable[[Callable[[], bool], float], None],
    check: bool,
) -> dict[str, Any]:
    """Read ``planes`` with ``IN_FLIGHT`` in flight while the main thread does ``main``."""
    latencies: list[float] = []
    lock = threading.Lock()

    def one(plane: int) -> None:
        start = time.perf_counter()
        data = read(plane)
        elapsed = time.perf_counter() - start
        if check and int(data[0, 0]) // 64 != plane:
            raise AssertionError(f'plane {plane} read as {int(data[0, 0]) // 64}')
        with lock:
            latencies.append(elapsed)

    cpu0, main0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
    futures = [pool.submit(one, plane) for plane in planes]
    main(lambda: all(f.done() for f in futures), time.monotonic() + BATCH_TIMEOUT_S)
    for f in futures:
        f.result(timeout=BATCH_TIMEOUT_S)
    wall = time.perf_counter() - wall0
    reader_cpu = (time.process_time() - cpu0) - (time.thread_time() - main0)
    return {
        'median_ms': statistics.median(latencies) * 1000,
        'mean_ms': statistics.fmean(latencies) * 1000,
        'cpu_per_plane_ms': reader_cpu / len(planes) * 1000,
        'wall_s': wall,
    }


def summarise(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    values = [r[key] for r in runs]
    return {'median': statistics.median(values), 'min': min(values), 'max': max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--reps', type=int, default=12, help='repetitions (>= 10 for the table)')
    parser.add_argument('--planes', type=int, default=16, help='planes in one batch')
    parser.add_argument('--latency', type=float, default=0.1, help='seconds a request')
    parser.add_argument('--busy-ms', type=float, default=8.0)
    parser.add_argument('--period-ms', type=float, default=10.0)
    parser.add_argument('--readers', default='zarr+fsspec,zarr+obstore,tensorstore,tensorstore (1 future)')
    parser.add_argument('--size', default='s1', choices=['small', 's1'], help='the sample volume')
    parser.add_argument('--out', type=Path, default=Path('bench_read_engines.json'))
    args = parser.parse_args(argv)
    if not 1 <= args.reps <= 100 or not 1 <= args.planes <= 200:
        parser.error('--reps in 1..100, --planes in 1..200')

    from napari_async_slicing.testing import sample_data, server_in_process

    volume = sample_data('volume', args.size)
    names = [n.strip() for n in args.readers.split(',') if n.strip()]
    modes = {'idle': idle_until, 'busy': Busy(args.busy_ms, args.period_ms).run_until}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {m: [] for m in modes} for n in names}
    with (
        server_in_process(volume.parent, latency=args.latency) as base,
        concurrent.futures.ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix='reader') as pool,
    ):
        url = f'{base}/{volume.name}'
        readers = make_readers(url, names)
        import zarr

        nz = zarr.open_array(volume, mode='r').shape[0]
        for read in readers.values():  # warm up: connections, metadata, imports
            batch(read, list(range(IN_FLIGHT)), pool, idle_until, check=True)
        started = time.perf_counter()
        for rep in range(args.reps):
            planes = [(rep * args.planes + i) % nz for i in range(args.planes)]
            for name, read in readers.items():
                for mode, main_thread in modes.items():
                    runs[name][mode].append(batch(read, planes, pool, main_thread, check=rep == 0))
            print(f'rep {rep + 1}/{args.reps} done ({time.perf_counter() - started:.0f} s)', file=sys.stderr)

    table = {
        name: {
            mode: {
                'plane_ms': summarise(r, 'median_ms'),
                'cpu_per_plane_ms': summarise(r, 'cpu_per_plane_ms'),
            }
            for mode, r in by_mode.items()
        }
        for name, by_mode in runs.items()
    }
    import zarr

    from napari_async_slicing._reading._tensorstore import context_spec

    versions = {
        'python': platform.python_version(),
        'zarr': zarr.__version__,
        'tensorstore': _dist_version('tensorstore'),
    }
    result = {
        'scenario': {
            'volume': str(volume),
            'latency_s': args.latency,
            'in_flight': IN_FLIGHT,
            'planes_per_batch': args.planes,
            'reps': args.reps,
            'busy_ms': args.busy_ms,
            'period_ms': args.period_ms,
            'cpus': _cpus(),
            'tensorstore_context': context_spec(),
        },
        'versions': versions,
        'table': table,
        'runs': runs,
    }
    args.out.write_text(json.dumps(result, indent=1))

    lat_ms = args.latency * 1000
    print(
        f'\n{volume.name} at {lat_ms:.0f} ms a request, {IN_FLIGHT} plane reads in flight, '
        f'{args.planes} planes a batch, {args.reps} repetitions; median (min-max) of the batch medians. '
        f'python {versions["python"]}, zarr {versions["zarr"]}, tensorstore {versions["tensorstore"]}\n'
    )
    print(
        '| reader | plane, main idle | plane, main busy | busy / idle | CPU per plane, idle | CPU per plane, busy |'
    )
    print('|---|---|---|---|---|---|')
    for name, row in table.items():
        idle, busy = row['idle'], row['busy']
        ratio = busy['plane_ms']['median'] / idle['plane_ms']['median']

        def cell(s: dict[str, float]) -> str:
            return f'{s["median"]:.0f} ms ({s["min"]:.0f}-{s["max"]:.0f})'

        def cpu(s: dict[str, float]) -> str:
            return f'{s["median"]:.1f} ms ({s["min"]:.1f}-{s["max"]:.1f})'

        print(
            f'| {name} | {cell(idle["plane_ms"])} | {cell(busy["plane_ms"])} | {ratio:.2f} | '
            f'{cpu(idle["cpu_per_plane_ms"])} | {cpu(busy["cpu_per_plane_ms"])} |'
        )
    print(f'\nwritten: {args.out}')
    return 0


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)


if __name__ == '__main__':
    sys.exit(main())
