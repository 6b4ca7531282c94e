"""Issue 22's measurements on a real, shown viewer over the real HTTP server, for one slicer.

``gaps``: a 25-step scrub at 40 ms over S1's array served at 50 ms a request with 30 % HTTP 500
(the server in a process of its own), repeated ``--runs`` times. Per run: the longest main-thread
gap with every paint of the window taken out (a 3 ms heartbeat; the bench's PaintMeter times each
Paint and UpdateRequest event and its overlap is subtracted from the gap that holds it), whether
the last plane is shown within 2 s of the scrub's end, and the error notifications.

``memory``: a random-walk scrub for ``--seconds`` over a 300x1024x1024 uint16 array (10 ms a
request, the server in a process of its own); RSS growth from the first plane shown, sampled every step. With ``--tracemalloc``, the
top allocation sites still live at the end, and live ndarrays, tasks, futures, exceptions.

    bash scripts/run-gui.sh .venv/bin/python scripts/scrub_faults_memory.py gaps --slicer ours
    bash scripts/run-gui.sh .venv/bin/python scripts/scrub_faults_memory.py memory --slicer napari-async
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time

import numpy as np

from napari_async_slicing.testing import server_in_process

MiB = 1024 * 1024


def _viewer(slicer: str, **options):
    import napari
    from napari.settings import get_settings

    import napari_async_slicing

    get_settings().experimental.async_ = slicer == 'napari-async'
    if slicer == 'ours':
        napari_async_slicing.enable(**options)
    else:
        napari_async_slicing.disable()
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1200, 900)
    return viewer


def _run_until(predicate, timeout: float) -> bool:
    from napari_async_slicing._bench._probe import run_until

    return run_until(predicate, timeout)


def _shown(viewer, layer) -> int | None:
    """The plane vispy holds, from its first pixel (the sample encodes the plane there): cheap,
    since it is polled on the main thread while gaps are measured (the tests check planes
    pixel-exactly)."""
    from napari_async_slicing._napari_compat import vispy_node

    data = vispy_node(viewer, layer)._data
    if data is None or np.asarray(data).size == 0:
        return None
    return int(np.asarray(data).flat[0]) // 64


def gaps(args) -> dict:
    """Each run: a 25-step scrub at 40 ms with 30 % HTTP 500 at 50 ms a request. The server runs
    in a process of its own (its threads do not compete for the viewer's GIL), faults from the
    start; gaps are the 3 ms heartbeat's, with every paint of the window taken out (the bench's
    PaintMeter: each Paint / UpdateRequest event's interval subtracted from the gap it falls in)."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    from napari_async_slicing._bench._probe import Heartbeat, PaintMeter, run_for
    from napari_async_slicing.testing import open_remote_array, sample_data

    volume = sample_data('volume', 'small' if args.small else 's1')
    notes: list = []
    notification_manager.notification_ready.connect(
        lambda n: notes.append((time.perf_counter(), n.message)) if n.severity >= NotificationSeverity.ERROR else None
    )
    runs = []
    with server_in_process(volume.parent, latency=0.05, failure_rate=0.3) as url:
        viewer = _viewer(args.slicer)
        heartbeat, paint = Heartbeat(3).start(), PaintMeter()
        sampler = None
        if args.profile:
            from napari_async_slicing._bench._probe import StallSampler

            sampler = StallSampler(heartbeat, threshold=0.016, period=0.001, painting=paint.painting)
            sampler.start()
        nz = open_remote_array(f'{url}/{volume.name}').shape[0]
        for run in range(args.runs):
            layer = viewer.add_image(open_remote_array(f'{url}/{volume.name}'), contrast_limits=(0, 65535))
            viewer.dims.set_current_step(0, 0)
            _run_until(lambda: _shown(viewer, layer) == 0 and layer.loaded, 30)
            run_for(0.3)
            steps = [min(nz - 1, 1 + run % 3 + i * max(1, (nz - 4) // 25)) for i in range(25)]
            t0 = time.perf_counter()
            if sampler is not None:
                sampler.arm()
            for z in steps:
                viewer.dims.set_current_step(0, z)
                run_for(0.04)
            t_end = time.perf_counter()
            arrived = _run_until(lambda: _shown(viewer, layer) == steps[-1], 2.0)
            t_last = time.perf_counter()
            if sampler is not None:
                sampler.disarm()
            _run_until(lambda: layer.loaded, 20)
            run_for(1.1)  # notifications of this run come in
            t1 = time.perf_counter()
            mine = [m for t, m in notes if t >= t0]
            gaps_ex_paint = paint.without_paint(heartbeat.gaps(t0, min(t1, t_end + 2.0)))
            runs.append({
                'max_gap_ms_no_paint': round(max((g for _, g in gaps_ex_paint), default=0.0) * 1000, 1),
                'last_plane_within_2s': arrived,
                'last_plane_s': round(t_last - t_end, 3) if arrived else None,
                'notifications': len(mine),
                'seconds': round(t1 - t0, 1),
            })
            print(json.dumps(runs[-1]), flush=True)
            viewer.layers.clear()
            run_for(0.3)
        heartbeat.stop()
        paint.stop()
        viewer.close()
        if sampler is not None:
            from napari_async_slicing._bench._report import stall_report

            sampler.stop()
            print(stall_report({args.slicer: sampler.summary()}), file=sys.stderr)
    gap_list = [r['max_gap_ms_no_paint'] for r in runs]
    return {
        'slicer': args.slicer, 'runs': len(runs),
        'max_gap_ms_no_paint': {'median': float(np.median(gap_list)), 'max': max(gap_list)},
        'last_plane_within_2s': sum(r['last_plane_within_2s'] for r in runs),
        'notifications_per_s_max': max(r['notifications'] / r['seconds'] for r in runs),
    }


def _live_counts() -> dict:
    from concurrent.futures import Future

    counts = {'ndarrays': 0, 'ndarray_mib': 0.0, 'tasks': 0, 'futures': 0, 'exceptions': 0,
              'tracebacks': 0}
    for obj in gc.get_objects():
        if isinstance(obj, np.ndarray):
            counts['ndarrays'] += 1
            if obj.base is None:
                counts['ndarray_mib'] += obj.nbytes / MiB
        elif isinstance(obj, Future):
            counts['futures'] += 1
        elif isinstance(obj, BaseException):
            counts['exceptions'] += 1
            counts['tracebacks'] += obj.__traceback__ is not None
        elif type(obj).__name__ == '_Task':
            counts['tasks'] += 1
    counts['ndarray_mib'] = round(counts['ndarray_mib'], 1)
    return counts


def _in_flight(slicer) -> dict:
    """What a slicer holds in flight now (ours: queued responses, tasks, zarr loop tasks)."""
    import asyncio

    from napari_async_slicing._napari_compat import zarr_event_loop

    out = {'loop_tasks': len(asyncio.all_tasks(zarr_event_loop()))}
    if hasattr(slicer, 'prefetches_in_flight'):
        out.update(tasks=len(slicer._scheduler.in_flight()), prefetches=slicer.prefetches_in_flight())
    return out


def memory(args) -> dict:
    import psutil

    from napari_async_slicing._bench._probe import run_for
    from napari_async_slicing.testing import make_volume, open_remote_array
    from napari_async_slicing.testing._data import cache_dir

    volume = make_volume(cache_dir() / 'issue22' / 'walk.zarr', shape=(300, 1024, 1024), chunks=(1, 512, 512))
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(args.frames)
    options = {} if args.cache_bytes is None else {'cache_bytes': args.cache_bytes}
    process = psutil.Process()
    rng = random.Random(args.seed)
    with server_in_process(volume.parent, latency=0.01) as url:
        viewer = _viewer(args.slicer, **options)
        layer = viewer.add_image(open_remote_array(f'{url}/{volume.name}'), contrast_limits=(0, 65535))
        _run_until(lambda: _shown(viewer, layer) is not None and layer.loaded, 60)
        gc.collect()
        base = process.memory_info().rss / MiB
        before = tracemalloc.take_snapshot() if args.tracemalloc else None
        if args.tracemalloc:
            tracemalloc.reset_peak()
            traced_base = tracemalloc.get_traced_memory()[0]
        traced_max = [0, None]
        z, steps, peak, visited, at_peak = int(viewer.dims.current_step[0]), 0, base, set(), {}
        until = time.monotonic() + args.seconds
        while time.monotonic() < until:
            z = min(299, max(0, z + rng.choice([-12, -6, -3, -1, 1, 3, 6, 12])))
            visited.add(z)
            viewer.dims.set_current_step(0, z)
            run_for(0.04)
            steps += 1
            rss = process.memory_info().rss / MiB
            if before is not None and tracemalloc.get_traced_memory()[0] > traced_max[0] + 4 * MiB:
                traced_max[:] = [tracemalloc.get_traced_memory()[0], tracemalloc.take_snapshot()]
            if rss > peak:
                peak, at_peak = rss, _in_flight(viewer._layer_slicer)
        _run_until(lambda: layer.loaded, 30)
        run_for(0.5)
        gc.collect()
        end = process.memory_info().rss / MiB
        report = {
            'slicer': args.slicer, 'cache_bytes': args.cache_bytes, 'steps': steps,
            'planes': len(visited), 'rss_base_mib': round(base), 'growth_end_mib': round(end - base),
            'growth_peak_mib': round(peak - base), 'at_peak': at_peak, 'live': _live_counts(),
        }
        slicer = viewer._layer_slicer
        if hasattr(slicer, 'cache_stats'):
            report['cache_mib'] = round(slicer.cache_stats()['bytes'] / MiB)
        if before is not None:
            report['traced_peak_growth_mib'] = round((tracemalloc.get_traced_memory()[1] - traced_base) / MiB)
            at_max = traced_max[1] or tracemalloc.take_snapshot()
            report['traced_max_growth_mib'] = round((traced_max[0] - traced_base) / MiB)
            top = at_max.compare_to(before, 'traceback')[:args.top]
            report['top'] = [
                {'mib': round(s.size_diff / MiB, 1), 'count': s.count_diff,
                 'where': [f'{f.filename.split("site-packages/")[-1]}:{f.lineno}' for f in s.traceback][-6:]}
                for s in top
            ]
        viewer.close()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('case', choices=['gaps', 'memory'])
    parser.add_argument('--slicer', choices=['ours', 'napari-async', 'napari'], default='ours')
    parser.add_argument('--runs', type=int, default=20)
    parser.add_argument('--small', action='store_true', help='gaps: the small sample volume')
    parser.add_argument(
        '--profile', action='store_true', help="gaps: sample the main thread's stack in gaps over 16 ms, paint left out"
    )
    parser.add_argument('--seconds', type=float, default=60.0)
    parser.add_argument('--cache-bytes', type=int, default=None)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--tracemalloc', action='store_true')
    parser.add_argument('--top', type=int, default=12)
    parser.add_argument('--frames', type=int, default=12, help='tracemalloc frames kept')
    args = parser.parse_args(argv)
    report = gaps(args) if args.case == 'gaps' else memory(args)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
