"""Turn the runner's results into ``bench.md``, ``bench.json`` and ``bench.png``."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

from napari_async_slicing._bench._config import (
    METRICS,
    MODE_TITLES,
    MODES,
    SCENARIO_TITLES,
    SCENARIOS,
)
from napari_async_slicing._bench._probe import tally


def _median(values: list[float]) -> float | None:
    values = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return statistics.median(values) if values else None


def aggregate(results: dict[str, Any]) -> dict[str, Any]:
    """``{scenario: {metric: {mode: value | None}}}`` of medians, plus per-cell status."""
    table: dict[str, Any] = {}
    status: dict[str, dict[str, str]] = {}
    errors: list[str] = []
    spec = results['spec']
    order = [s for s in SCENARIOS if s in spec['scenarios']]
    for name in order:
        table[name] = {m.key: {} for m in METRICS[name]}
        status[name] = {}
        for mode, res in results['modes'].items():
            recs = [r for r in res['results'] if r['scenario'] == name]
            ok = [r for r in recs if r.get('status') == 'ok']
            bad = [r for r in recs if r.get('status') != 'ok']
            if ok:
                status[name][mode] = 'ok' if not bad else f'{len(ok)}/{len(recs)} ok'
            else:
                status[name][mode] = bad[0].get('status', 'missing') if bad else 'missing'
            for r in bad[:1]:
                errors.append(f'{mode} {name} repeat {r["repeat"]}: {r.get("error", r.get("status"))}')
            for m in METRICS[name]:
                table[name][m.key][mode] = _median([r['metrics'].get(m.key, float('nan')) for r in ok])
    return {'table': table, 'status': status, 'errors': errors}


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return '—'
    if unit == 'x':
        return f'{value:.2f}×'
    if unit == 'ms':
        return f'{value:.0f} ms' if abs(value) >= 100 else f'{value:.1f} ms'
    return f'{value:.0f}' if float(value).is_integer() else f'{value:.1f}'


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return '—'
    return f'{a / b:.2f}'


def machine_facts(results: dict[str, Any]) -> dict[str, Any]:
    facts: dict[str, Any] = {
        'platform': platform.platform(),
        'python': sys.version.split()[0],
        'cpu_count': os.cpu_count(),
    }
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                facts['cpu'] = line.split(':', 1)[1].strip()
                break
        for line in Path('/proc/meminfo').read_text().splitlines():
            if line.startswith('MemTotal'):
                facts['memory_gib'] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    for res in results['modes'].values():
        for key in ('napari', 'vispy', 'zarr', 'qt_api', 'qt', 'gl_renderer'):
            if key in res.get('facts', {}):
                facts.setdefault(key, res['facts'][key])
    facts.update(_git_facts())
    facts['display'] = os.environ.get('DISPLAY', '') or 'none (children run under xvfb-run)'
    facts['qt_qpa_platform'] = os.environ.get('QT_QPA_PLATFORM', '')
    return facts


def _git_facts() -> dict[str, str]:
    import subprocess

    root = Path(__file__).resolve().parents[3]

    def git(*args: str) -> str:
        done = subprocess.run(['git', '-C', str(root), *args], capture_output=True, text=True, timeout=10)
        return done.stdout.strip()

    try:
        head = git('rev-parse', '--short', 'HEAD')
        dirty = git('status', '--porcelain', '--untracked-files=no')
    except (OSError, subprocess.SubprocessError):
        return {}
    return {'commit': head + (' (with uncommitted changes)' if dirty else '')} if head else {}


def markdown(results: dict[str, Any], agg: dict[str, Any], command: str, facts: dict[str, Any]) -> str:
    spec = results['spec']
    modes = [m for m in MODES if m in results['modes']]
    lines = ['# napari-async-slicing bench: napari sync vs napari async vs ours', '']
    lines += [f'Command: `{command}`  ', f'Wall time: {results["seconds"]:.0f} s  ']
    lines += ['Machine: ' + ', '.join(f'{k} {v}' for k, v in facts.items()), '']
    shape = 'x'.join(map(str, spec['volume_shape']))
    lines += [
        f'Parameters: remote volume `{spec["size"]}` ({shape} uint16, zarr v3 over HTTP on 127.0.0.1 '
        f'via {spec["store"]}) with {spec["latency"] * 1000:.0f} ms per request; '
        f'{spec["steps"]} steps every {spec["step_interval_ms"]} ms; in-memory '
        f'{"x".join(map(str, spec["memory_shape"]))} uint16 (S4: {spec["single_steps"]} steps), '
        f'S2 numpy {"x".join(map(str, spec["mixed_shape"]))} float32; heartbeat every '
        f'{spec["heartbeat_ms"]} ms; each value is the median of {spec["repeat"]} repetitions, '
        'each mode in its own process.'
        + _engine_note(results)
        + (
            ' No paint: every paint event dropped (`--no-paint`), frames clocked at 60 Hz.'
            if spec.get('no_paint')
            else ''
        ),
        '',
    ]
    if 'S3' in spec['scenarios']:
        ome = 'x'.join(map(str, spec.get('ome_shape', ())))
        chunks = 'x'.join(map(str, spec.get('ome_chunks', ())))
        lines += [
            f'S3: OME-Zarr `{spec.get("ome_size")}` ({ome} uint16 at level 0, 4 levels halving '
            f'Y and X, chunks {chunks}; the zarr arrays `open_image` returns, same server and '
            f'latency); {spec.get("ome_steps")} steps to a new plane per repetition, each once the '
            'previous one settled (vispy holds it at the level napari picked, the layer is '
            'loaded, the main thread is calm); then, for ours, as many *cold jumps* back over '
            'those planes, each after its prefetches ended and its chunk cache was emptied '
            '(what a jump beyond the coarse window read at rest meets). napari has no cache, '
            'so all its steps are cold: its cold rows repeat its steps. ' + _s3_view_note(results),
            '',
        ]
    if 'S6' in spec['scenarios']:
        lines += [
            f'S6: the remote volume above; {spec.get("revisit_trials")} revisit trials (A, B, '
            f'back to A, each settled) and {spec.get("neighbour_trials")} neighbour trials '
            f'(vispy holds P, rest {spec.get("pause_s", 1.0):.1f} s, step to P+1) per '
            'repetition; planes never shown before in that viewer.',
            '',
        ]
    head = ['scenario', 'metric', *[MODE_TITLES[m] for m in modes]]
    if 'ours' in modes:
        head += [f'ours / {MODE_TITLES[m]}' for m in ('napari-async', 'napari-sync') if m in modes]
    lines += ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for name in SCENARIOS:
        if name not in agg['table']:
            continue
        for i, m in enumerate(METRICS[name]):
            label = m.label + (f' ({m.unit})' if m.unit == 'ms' else '')
            cells = [SCENARIO_TITLES[name] if i == 0 else '', label]
            row = agg['table'][name][m.key]
            for mode in modes:
                value = row.get(mode)
                st = agg['status'][name].get(mode, 'missing')
                cells.append(_fmt(value, m.unit) if value is not None or st == 'ok' else st)
            if 'ours' in modes:
                for other in ('napari-async', 'napari-sync'):
                    if other in modes:
                        cells.append(_ratio(row.get('ours'), row.get(other)) if m.ratio else '')
            lines.append('| ' + ' | '.join(cells) + ' |')
    lines += [
        '',
        'Definitions: a *gap* is the time between two main-thread heartbeat ticks; *stall* '
        'sums (gap − 16 ms) over gaps above 16 ms; *shows / holds* means the array napari handed '
        "to the layer's vispy node is that plane (identified pixel-exactly on a subgrid); "
        '*latency* runs from setting `dims` to that moment. Ratios < 1 favour ours for times; '
        'for "planes applied" and "steps shown" higher is better. S3 *first pixels* is the '
        'first time vispy holds the new plane at any level, *full resolution* the first time '
        'it holds it at the level napari settles on for the canvas. In S6 ours uses its chunk '
        'cache and prefetch (napari has neither; revisits and rested neighbours are served '
        'from decoded chunks); in S3 ours shows the coarsest level of the new plane first '
        '(progressive multiscale), napari shows nothing until the data level is read.',
    ]
    if agg['errors']:
        lines += ['', 'Failures:', *[f'- {e}' for e in agg['errors']]]
    log = results['modes'].get('ours', {}).get('latency_log')
    if log:
        from napari_async_slicing._bench._fromlog import markdown as log_markdown

        lines += ['', log_markdown(log, "ours: stages from our slicer's latency log (--latency-log)")]
    return '\n'.join(lines) + '\n'


def _engine_note(results: dict[str, Any]) -> str:
    """What read zarr arrays in the 'ours' run (``--read-engine``)."""
    ours = results['modes'].get('ours')
    if ours is None:
        return ''
    facts = ours.get('facts', {})
    engine = results['spec'].get('read_engine', 'auto')
    with_ = facts.get('reads_with', '?')
    version = f' {facts["tensorstore"]}' if with_ == 'tensorstore' and facts.get('tensorstore') else ''
    return f' Ours reads zarr arrays with {with_}{version} (`--read-engine {engine}`).'


def _s3_view_note(results: dict[str, Any]) -> str:
    """Canvas, zoom and data level per mode (they must agree for the comparison to be fair)."""
    views = {}
    for mode in MODES:
        res = results['modes'].get(mode)
        if not res:
            continue
        for r in res['results']:
            view = (r.get('extra') or {}).get('view') if r['scenario'] == 'S3' else None
            if r.get('status') == 'ok' and view:
                canvas = 'x'.join(map(str, view.get('canvas', ['?'])))
                views[mode] = (
                    f'canvas {canvas} px (w x h), zoom {view["zoom"]:.3f}, data level {view["data_level"]}'
                )
                break
    if not views:
        return ''
    if len(set(views.values())) == 1:
        return 'Every mode: ' + next(iter(views.values())) + ' (fit to view).'
    return 'Differs by mode (!): ' + '; '.join(f'{MODE_TITLES[m]}: {v}' for m, v in views.items()) + '.'


def _s1_timeline(res: dict[str, Any]) -> dict[str, Any] | None:
    ok = [
        r
        for r in res['results']
        if r['scenario'] == 'S1' and r.get('status') == 'ok' and (r.get('extra') or {}).get('timeline')
    ]
    if not ok:
        return None
    ok.sort(key=lambda r: r['metrics']['final_latency_ms'])
    return ok[len(ok) // 2]['extra']['timeline']  # the median repetition


def plot(results: dict[str, Any], agg: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    modes = [m for m in MODES if m in results['modes']]
    timelines = {m: _s1_timeline(results['modes'][m]) for m in modes}
    with_tl = [m for m in modes if timelines[m] is not None]
    n = len(with_tl) + 1
    fig, axes = plt.subplots(n, 1, figsize=(10, 2.6 * n + 0.5), squeeze=False)
    xmax = max(
        (
            max([s[0] for s in tl['steps']] + [g[0] for g in tl['gaps']] + [0.1])
            for tl in timelines.values()
            if tl
        ),
        default=1.0,
    )
    for ax, mode in zip(axes[:, 0], with_tl, strict=False):
        tl = timelines[mode]
        assert tl is not None
        steps = tl['steps']
        xs = [s[0] for s in steps] + [xmax]
        ys = [s[1] for s in steps] + [steps[-1][1]]
        ax.step(xs, ys, where='post', color='tab:blue', label='plane requested (dims)')
        shown = [(t, p) for t, p in tl['shown'] if p is not None]
        if shown:
            ax.step(
                [t for t, _ in shown] + [xmax],
                [p for _, p in shown] + [shown[-1][1]],
                where='post',
                color='tab:green',
                label='plane vispy holds',
            )
            ax.plot([t for t, _ in shown], [p for _, p in shown], 'o', color='tab:green', ms=3)
        ax.set_ylabel('plane')
        ax.set_xlim(-0.06, xmax * 1.02)
        ax.set_title(f'S1 remote scrub — {MODE_TITLES[mode]}', fontsize=10, loc='left')
        gx = ax.twinx()
        gaps = [(t, g) for t, g in tl['gaps'] if g > 8]
        if gaps:
            gx.bar(
                [t - g / 2000 for t, g in gaps],
                [g for _, g in gaps],
                width=[g / 1000 for _, g in gaps],
                color='tab:red',
                alpha=0.35,
                label='main-thread gap > 8 ms',
            )
        gx.axhline(16, color='tab:red', lw=0.8, ls=':')
        gx.set_ylabel('gap (ms)', color='tab:red')
        gx.set_ylim(0, max([g for _, g in tl['gaps']] + [50]) * 1.1)
        if mode == with_tl[0]:
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = gx.get_legend_handles_labels()
            ax.legend(h1 + h2, l1 + l2, fontsize=8, loc='upper left')
    if with_tl:
        axes[len(with_tl) - 1, 0].set_xlabel('seconds since the first step')
    _summary_bars(axes[-1, 0], agg, modes)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _summary_bars(ax: Any, agg: dict[str, Any], modes: list[str]) -> None:
    picks = [
        ('S1', 'final_latency_ms', 'S1 final'),
        ('S1', 'max_gap_ms', 'S1 max gap'),
        ('S2', 'numpy_median_ms', 'S2 numpy'),
        ('S3', 'first_pixels_ms', 'S3 first px'),
        ('S3', 'full_res_ms', 'S3 full res'),
        ('S3', 'max_gap_ms', 'S3 max gap'),
        ('S4', 'latency_median_ms', 'S4'),
        ('S5', 'last_latency_ms', 'S5 last'),
        ('S6', 'revisit_ms', 'S6 revisit'),
        ('S6', 'neighbour_ms', 'S6 neighbour'),
    ]
    picks = [p for p in picks if p[0] in agg['table']]
    width = 0.8 / max(1, len(modes))
    top = 10.0
    for i, mode in enumerate(modes):
        vals = [agg['table'][s][k].get(mode) or 0.0 for s, k, _ in picks]
        bars = ax.bar([j + i * width for j in range(len(picks))], vals, width, label=MODE_TITLES[mode])
        ax.bar_label(bars, labels=[f'{v:.0f}' if v else '' for v in vals], fontsize=6, rotation=90, padding=2)
        top = max([top, *vals])
    ax.set_ylim(0, top * 8)  # room for the value labels (log scale)
    ax.set_xticks([j + width * (len(modes) - 1) / 2 for j in range(len(picks))])
    ax.set_xticklabels([p[2] for p in picks], fontsize=8)
    ax.set_ylabel('ms (median)')
    ax.set_yscale('symlog', linthresh=10)
    ax.set_xlim(-0.5, len(picks) - 0.5 + width * (len(modes) - 1))
    # Above the axes, right of the title, so it never hides a bar.
    ax.legend(
        fontsize=8,
        ncol=len(modes),
        loc='lower right',
        bbox_to_anchor=(1.0, 1.0),
        frameon=False,
        borderaxespad=0.2,
    )
    ax.set_title('summary: medians, ms, log scale (lower is better)', fontsize=10, loc='left')


def write_outputs(results: dict[str, Any], out_dir: Path, command: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    agg = aggregate(results)
    facts = machine_facts(results)
    md = markdown(results, agg, command, facts)
    paths = {'md': out_dir / 'bench.md', 'json': out_dir / 'bench.json', 'png': out_dir / 'bench.png'}
    paths['md'].write_text(md)
    doc = {
        'command': command,
        'machine': facts,
        'table': agg['table'],
        'status': agg['status'],
        'errors': agg['errors'],
        **results,
    }
    paths['json'].write_text(json.dumps(doc, indent=1, default=str))
    try:
        plot(results, agg, paths['png'])
    except Exception as exc:  # noqa: BLE001 - the table matters more than the figure
        print(f'bench: could not draw {paths["png"]}: {exc}', file=sys.stderr)
    traced = {m: [r for r in mode['results'] if r.get('gap_traces')] for m, mode in results['modes'].items()}
    if any(traced.values()):
        paths['trace'] = out_dir / 'gap-trace.txt'
        paths['trace'].write_text(gap_trace_report(traced))
    profiles = {m: r['stall_profile'] for m, r in results['modes'].items() if r.get('stall_profile')}
    if profiles:
        paths['profile'] = out_dir / 'stall-profile.txt'
        paths['profile'].write_text(stall_report(profiles))
    return paths


def gap_trace_report(
    traced: dict[str, list[dict[str, Any]]], longest: int = 3, shortest_ms: float = 0.3
) -> str:
    """``--trace-gaps``: per mode and scenario, the main thread's events per scrub by what they
    were, and the ``longest`` paint-excluded gaps event by event."""
    lines = [
        'What the main thread did outside paint during each scrub (every Qt event it delivered, '
        'timed: wall, main-thread CPU, and "ready": time it was runnable but waiting for a CPU; '
        'the rest of wall it was blocked, mostly for the GIL), and its longest paint-excluded gaps '
        f"event by event (ms from the gap's start; events under {shortest_ms} ms left out).",
        '',
    ]
    for mode, records in traced.items():
        scenarios: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            scenarios.setdefault(record['scenario'], []).extend(record['gap_traces'])
        for scenario, traces in scenarios.items():
            lines.append(f'== {mode}, {scenario}: {len(traces)} scrubs')
            totals: dict[str, list[float]] = {}
            for trace in traces:
                for name, row in trace['by_event'].items():
                    tally(totals, name, *row)
            n = len(traces)
            wall, cpu, ready = (sum(r[i] for r in totals.values()) / n for i in (1, 2, 3))
            lines.append(
                f'  per scrub: {wall:.1f} ms in events: {cpu:.1f} ms main-thread CPU, {ready:.1f} ms '
                f'waiting for a CPU, {wall - cpu - ready:.1f} ms blocked'
            )
            lines.append('     events    wall     CPU   ready  longest  what')
            for name, (count, ms, cpu, ready, top) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:12]:
                lines.append(
                    f'   {count / n:8.1f} {ms / n:7.1f} {cpu / n:7.1f} {ready / n:7.1f} {top:8.1f}  {name}'
                )
            for trace in sorted(traces, key=lambda t: -t['gap_ms'])[:longest]:
                split = ''
                if trace.get('split_ms'):
                    cpu, ready = trace['split_ms']
                    split = f'; CPU {cpu:.1f}, waiting for a CPU {ready:.1f}, blocked {trace["raw_ms"] - cpu - ready:.1f}'
                lines.append(
                    f'  a {trace["gap_ms"]:.1f} ms gap with paint taken out ({trace["raw_ms"]:.1f} ms in all{split}):'
                )
                for at, ms, cpu, ready, name in trace['events']:
                    if ms >= shortest_ms:
                        waited = '' if ready is None else f', ready {ready:4.1f}'  # None: a paint
                        lines.append(f'    {at:6.1f} + {ms:5.1f} (CPU {cpu:4.1f}{waited})  {name}')
            lines.append('')
    return '\n'.join(lines)


def stall_report(profiles: dict[str, Any]) -> str:
    lines = []
    for mode, prof in profiles.items():
        lines += [
            f'== {mode}: {prof["samples"]} samples of the main thread while its heartbeat was '
            f'late by > {prof["threshold_ms"]:.0f} ms (every {prof["period_ms"]:.0f} ms), outside '
            f'paint ({prof.get("samples_in_paint", 0)} more while it painted, not profiled)',
            '',
            'inclusive (function on the stack):',
        ]
        lines += [f'  {n:6d}  {f}' for f, n in prof['inclusive']]
        lines += ['', 'innermost (function running):']
        lines += [f'  {n:6d}  {f}' for f, n in prof['innermost']]
        lines += ['', 'other threads (innermost frame) while the main thread had no Python frame:']
        lines += [f'  {n:6d}  {f}' for f, n in prof.get('other_threads_when_in_qt', [])]
        lines += ['', 'most frequent stacks (innermost first):']
        for stack, n in prof['stacks']:
            lines += [f'  {n} samples:'] + [f'      {f}' for f in stack]
        lines += [
            '',
            'longest stalls, sample by sample (ms after the last heartbeat; innermost first; '
            'runs of one stack merged):',
        ]
        for ms, samples in prof.get('longest', []):
            lines.append(f'  a {ms:.0f} ms stall:')
            runs: list[list] = []
            for at, frames in samples:
                if runs and runs[-1][2] == frames:
                    runs[-1][1] = at
                else:
                    runs.append([at, at, frames])
            for first, last, frames in runs:
                lines.append(f'    {first:5.0f}-{last:5.0f} ms  ' + ' < '.join(frames))
        lines.append('')
    return '\n'.join(lines)
