"""``bench_main(argv)``: the side-by-side benchmark command line."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from napari_async_slicing._bench._config import MODES, SCENARIOS, SIZES, BenchSpec


def _parser(prog: str = 'napari-async-slicing bench') -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description='Run napari sync, napari async and our slicer side by side (DESIGN.md §5) and '
        'write bench.md, bench.json and bench.png. Each mode runs in a fresh process '
        'under Xvfb when there is no display.',
    )
    p.add_argument(
        '--scenarios',
        default=','.join(SCENARIOS),
        help=f'comma-separated subset of {",".join(SCENARIOS)} (default: all)',
    )
    p.add_argument('--modes', default=','.join(MODES), help='comma-separated subset of ' + ','.join(MODES))
    p.add_argument('--repeat', type=int, default=3, help='repetitions per scenario; medians are reported')
    p.add_argument('--latency', type=float, default=0.1, help='seconds per HTTP request (S1, S2, S3, S6)')
    p.add_argument('--out', type=Path, default=Path('out/bench'), help='output folder')
    p.add_argument(
        '--quick',
        action='store_true',
        help="smaller data ('small' volume, 50x512x512 in-memory, 'tiny' OME-Zarr) and "
        'fewer S3 steps, S4 steps and S6 trials',
    )
    p.add_argument('--size', choices=sorted(SIZES), help='volume size (default s1, or small with --quick)')
    p.add_argument(
        '--ome-size',
        choices=sorted(SIZES),
        help="S3's OME-Zarr sample (default: small, 32x1024x1024 in 4 levels; tiny with "
        '--quick or --size tiny; s1 is 64x2048x2048)',
    )
    p.add_argument('--steps', type=int, help='S1/S2 scrub steps (default 25)')
    p.add_argument(
        '--store',
        choices=('fsspec', 'obstore'),
        default='fsspec',
        help='how the viewer opens the remote zarr (default fsspec, as users usually do)',
    )
    p.add_argument(
        '--read-engine',
        choices=('auto', 'tensorstore', 'zarr'),
        default='auto',
        help="what reads zarr arrays in the 'ours' run (SlicingOptions.read_engine; default auto)",
    )
    p.add_argument(
        '--profile-gaps',
        action='store_true',
        help='sample the main-thread stack whenever its heartbeat is late by > 10 ms and '
        'write stall-profile.txt (perturbs the timings slightly)',
    )
    p.add_argument(
        '--trace-gaps',
        action='store_true',
        help="time every main-thread event and write gap-trace.txt: what each scrub's longest "
        'paint-excluded gap was made of, event by event (perturbs the timings slightly)',
    )
    p.add_argument(
        '--no-paint',
        action='store_true',
        help='drop every paint event (the window draws nothing; frames are clocked at 60 Hz): '
        "the main thread's cost with painting free, as on a GPU, with software GL's paints and "
        'their CPU left out (vispy is still handed every plane)',
    )
    p.add_argument(
        '--latency-log',
        action='store_true',
        help="also write our slicer's latency log in the 'ours' run and add its stage "
        'breakdown (queue, read, main-thread apply) to bench.md',
    )
    p.add_argument(
        '--spin',
        metavar='BUSY,PERIOD',
        help='from the first scrub of each repetition to its end, run a thread beside every mode '
        "that spins Python for BUSY ms of every PERIOD ms (what other threads' Python costs the "
        'main thread)',
    )
    p.add_argument(
        '--from-log',
        type=Path,
        metavar='FILE',
        help='do not run anything: summarise a latency log written with '
        'NAPARI_ASYNC_SLICING_LOG=FILE into OUT/bench-log.md',
    )
    return p


def bench_main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.from_log is not None:
        return _from_log(args.from_log, args.out)
    scenarios = [s.strip().upper() for s in args.scenarios.split(',') if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f'unknown scenarios {unknown}; choose from {",".join(SCENARIOS)}')
    scenarios = [s for s in SCENARIOS if s in scenarios]
    modes = [m.strip() for m in args.modes.split(',') if m.strip()]
    if any(m not in MODES for m in modes) or not modes:
        parser.error(f'--modes must be a subset of {",".join(MODES)}')
    if args.repeat < 1:
        parser.error('--repeat must be >= 1')
    if not scenarios:
        parser.error('no scenario to run')
    spin = None
    if args.spin:
        try:
            busy, period = (float(x) for x in args.spin.split(','))
        except ValueError:
            parser.error('--spin takes BUSY,PERIOD in ms, e.g. 0.2,1')
        if not 0 < busy <= period:
            parser.error('--spin: need 0 < BUSY <= PERIOD')
        spin = (busy, period)
    spec = BenchSpec.make(
        quick=args.quick,
        size=args.size,
        scenarios=scenarios,
        repeat=args.repeat,
        latency=args.latency,
        steps=args.steps,
        store=args.store,
        read_engine=args.read_engine,
        ome_size=args.ome_size,
        profile_gaps=args.profile_gaps,
        trace_gaps=args.trace_gaps,
        no_paint=args.no_paint,
        latency_log=args.latency_log,
        spin=spin,
    )

    from napari_async_slicing._bench._report import write_outputs
    from napari_async_slicing._bench._runner import run_modes

    command = 'napari-async-slicing bench ' + shlex.join(argv)
    t0 = time.perf_counter()
    results = run_modes(
        spec, modes, workdir=args.out / 'work', progress=lambda msg: print(f'bench: {msg}', flush=True)
    )
    paths = write_outputs(results, args.out, command)
    print(paths['md'].read_text())
    print(f'bench: wrote {", ".join(str(p) for p in paths.values())} in {time.perf_counter() - t0:.0f} s')
    failed = [m for m, r in results['modes'].items() if r['status'] != 'ok']
    return 1 if failed and len(failed) == len(modes) else 0


def _from_log(path: Path, out: Path) -> int:
    from napari_async_slicing._bench._fromlog import markdown, read_log, summarize

    if not path.is_file():
        print(f'bench: no latency log at {path}', file=sys.stderr)
        return 2
    entries = read_log(path)
    if not entries:
        print(f'bench: {path} holds no latency-log entries', file=sys.stderr)
        return 2
    md = markdown(summarize(entries), f'Latency log {path} ({len(entries)} requests)')
    out.mkdir(parents=True, exist_ok=True)
    (out / 'bench-log.md').write_text(md)
    print(md)
    print(f'bench: wrote {out / "bench-log.md"}')
    return 0
