"""A/B of our slicer's read engines in the side-by-side bench (issue 25): zarr-python vs tensorstore.

Runs ``napari-async-slicing bench --modes ours --read-engine E`` for each engine in rounds, the
engines' order swapped every round (a shared, noisy machine drifts: interleaving spreads the drift
over both), ``--reps`` repetitions a round, then napari async once for reference. Every run is a
fresh mode process against a fresh server, as the bench does. Writes ``ab.json`` (every
repetition of every run, with load averages) and ``ab.md``: per metric the median and the
interquartile range of all repetitions of each engine, and tensorstore / zarr.

    PYTHONPATH=src python scripts/ab_read_engines.py --rounds 5 --reps 2 --out out/ab
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ENGINES = ('zarr', 'tensorstore')


def quartiles(values: list[float]) -> tuple[float, float, float] | None:
    values = sorted(v for v in values if isinstance(v, int | float) and v == v)
    if not values:
        return None
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method='inclusive')
    return q[0], statistics.median(values), q[2]


def p_value(a: list[float], b: list[float]) -> str:
    """Two-sided Mann-Whitney U p-value of the engines' repetitions ('' without scipy)."""
    try:
        from scipy.stats import mannwhitneyu
    except ImportError:
        return ''
    a = [v for v in a if v == v]
    b = [v for v in b if v == v]
    if len(a) < 3 or len(b) < 3 or len(set(a) | set(b)) < 2:
        return ''
    return f'{mannwhitneyu(a, b, alternative="two-sided").pvalue:.2g}'


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return '—'
    if unit == 'x':
        return f'{value:.2f}×'
    return f'{value:.0f}' if abs(value) >= 100 or unit == '' else f'{value:.1f}'


def run(args: argparse.Namespace) -> dict[str, Any]:
    from napari_async_slicing._bench._config import BenchSpec
    from napari_async_slicing._bench._runner import run_modes

    scenarios = [s.strip().upper() for s in args.scenarios.split(',') if s.strip()]

    def spec(engine: str, repeat: int) -> BenchSpec:
        return BenchSpec.make(
            size=args.size, scenarios=scenarios, repeat=repeat, latency=args.latency, read_engine=engine
        )

    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    for round_ in range(args.rounds):
        order = ENGINES if round_ % 2 == 0 else ENGINES[::-1]
        for engine in order:
            load = os.getloadavg()
            result = run_modes(
                spec(engine, args.reps), ['ours'], workdir=args.out / 'work' / f'{round_}-{engine}'
            )
            ours = result['modes']['ours']
            runs.append(
                {
                    'round': round_,
                    'mode': f'ours-{engine}',
                    'status': ours['status'],
                    'facts': ours['facts'],
                    'load_before': load,
                    'load_after': os.getloadavg(),
                    'results': ours['results'],
                }
            )
            print(
                f'ab: round {round_ + 1}/{args.rounds} {engine}: {ours["status"]} '
                f'({time.perf_counter() - started:.0f} s, load {load[0]:.1f})',
                flush=True,
            )
    if args.napari_async_reps:
        load = os.getloadavg()
        result = run_modes(
            spec('auto', args.napari_async_reps), ['napari-async'], workdir=args.out / 'work' / 'na'
        )
        na = result['modes']['napari-async']
        runs.append(
            {
                'round': None,
                'mode': 'napari-async',
                'status': na['status'],
                'facts': na['facts'],
                'load_before': load,
                'load_after': os.getloadavg(),
                'results': na['results'],
            }
        )
    return {
        'args': {k: str(v) for k, v in vars(args).items()},
        'spec': spec('auto', args.reps).to_json(),
        'date': time.strftime('%Y-%m-%d %H:%M'),
        'seconds': time.perf_counter() - started,
        'runs': runs,
    }


def table(doc: dict[str, Any]) -> str:
    from napari_async_slicing._bench._config import METRICS, SCENARIO_TITLES, SCENARIOS

    modes = ['ours-zarr', 'ours-tensorstore', 'napari-async']
    values: dict[tuple[str, str, str], list[float]] = {}
    reps: dict[tuple[str, str], int] = {}
    for run_ in doc['runs']:
        for r in run_['results']:
            if r.get('status') != 'ok':
                continue
            reps[run_['mode'], r['scenario']] = reps.get((run_['mode'], r['scenario']), 0) + 1
            for key, value in r['metrics'].items():
                values.setdefault((run_['mode'], r['scenario'], key), []).append(value)
    loads = [x for run_ in doc['runs'] for x in (run_['load_before'][0], run_['load_after'][0])]
    lines = [
        f'A/B of read engines, {doc["date"]}, {doc["seconds"] / 60:.0f} min; load average (1 min) '
        f'{min(loads):.1f}-{max(loads):.1f} over the runs; cells: median [25th-75th percentile] of '
        'every repetition; ts / zarr: ratio of medians; p: two-sided Mann-Whitney U test of the '
        "engines' repetitions.",
        '',
        '| scenario | metric | ours, zarr-python | ours, tensorstore | ts / zarr | p | napari async |',
        '|---|---|---|---|---|---|---|',
    ]
    scenarios = [s for s in SCENARIOS if any(k[1] == s for k in values)]
    for name in scenarios:
        counts = ', '.join(f'{m.split("-", 1)[-1]} {reps.get((m, name), 0)}' for m in modes)
        first = True
        for m in METRICS[name]:
            cells = []
            medians = {}
            for mode in modes:
                q = quartiles(values.get((mode, name, m.key), []))
                medians[mode] = q[1] if q else None
                if q is None:
                    cells.append('—')
                elif mode == 'napari-async' or q[0] == q[2]:
                    cells.append(fmt(q[1], m.unit))
                else:
                    cells.append(f'{fmt(q[1], m.unit)} [{fmt(q[0], m.unit)}-{fmt(q[2], m.unit)}]')
            a, b = medians['ours-zarr'], medians['ours-tensorstore']
            ratio = f'{b / a:.2f}' if a and b is not None and m.ratio else ''
            label = m.label + (' (ms)' if m.unit == 'ms' else '')
            title = f'{SCENARIO_TITLES[name]} (reps: {counts})' if first else ''
            p = p_value(
                values.get(('ours-zarr', name, m.key), []), values.get(('ours-tensorstore', name, m.key), [])
            )
            lines.append(f'| {title} | {label} | {cells[0]} | {cells[1]} | {ratio} | {p} | {cells[2]} |')
            first = False
    return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--reps', type=int, default=2, help='repetitions per round and engine')
    parser.add_argument('--scenarios', default='S1,S2,S3,S6,S8')
    parser.add_argument('--latency', type=float, default=0.1)
    parser.add_argument('--size', default='s1')
    parser.add_argument('--napari-async-reps', type=int, default=3, help='0: no napari async run')
    parser.add_argument('--out', type=Path, default=Path('out/ab'))
    parser.add_argument('--table-only', action='store_true', help='rewrite ab.md from ab.json')
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.table_only:
        doc = json.loads((args.out / 'ab.json').read_text())
    else:
        doc = run(args)
        (args.out / 'ab.json').write_text(json.dumps(doc, indent=1, default=str))
    md = table(doc)
    (args.out / 'ab.md').write_text(md)
    print(md)
    return 0


if __name__ == '__main__':
    sys.exit(main())
