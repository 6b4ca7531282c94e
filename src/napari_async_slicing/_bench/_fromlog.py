"""Summarise our slicer's latency log (``NAPARI_ASYNC_SLICING_LOG``, one JSON line per request).

Per layer: how requests ended (applied, stale, cancelled, dropped, failed) and, for applied ones,
where the time went: waiting for a worker (submit → started), reading (started → data ready),
waiting for the main thread (data ready → applied), and in total (submit → applied).
"""

from __future__ import annotations

import collections
import json
import statistics
from pathlib import Path
from typing import Any

STAGES = (
    ('queue_ms', 'submit → worker started'),
    ('read_ms', 'worker started → data ready'),
    ('to_main_ms', 'data ready → applied on the main thread'),
    ('total_ms', 'submit → applied'),
)
OUTCOMES = ('applied', 'stale', 'cancelled', 'dropped', 'failed')


def read_log(path: Path) -> list[dict[str, Any]]:
    entries = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and 'outcome' in entry:
            entries.append(entry)
    return entries


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if len(values) == 1:
        return values[0]
    pos = q * (len(values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def summarize(entries: list[dict[str, Any]]) -> dict[str, Any]:
    layers: dict[str, Any] = {}
    by_layer: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for e in entries:
        by_layer[str(e.get('layer'))].append(e)
    for name, items in by_layer.items():
        outcomes = collections.Counter(e['outcome'] for e in items)
        stages: dict[str, list[float]] = {k: [] for k, _ in STAGES}
        for e in items:
            if e['outcome'] != 'applied':
                continue
            started, ready, applied = e.get('started_ms'), e.get('data_ready_ms'), e.get('applied_ms')
            if started is not None:
                stages['queue_ms'].append(started)
            if started is not None and ready is not None:
                stages['read_ms'].append(ready - started)
            if ready is not None and applied is not None:
                stages['to_main_ms'].append(applied - ready)
            if applied is not None:
                stages['total_ms'].append(applied)
        layers[name] = {
            'requests': len(items),
            'outcomes': {o: outcomes.get(o, 0) for o in OUTCOMES},
            'stages': {
                k: ({'median': statistics.median(v), 'p90': _pct(v, 0.9), 'max': max(v)} if v else None)
                for k, v in stages.items()
            },
        }
    return {'requests': len(entries), 'layers': layers}


def markdown(summary: dict[str, Any], title: str) -> str:
    lines = [f'## {title}', '']
    if not summary['layers']:
        return '\n'.join([*lines, 'The log holds no requests.', ''])
    lines += ['| layer | requests | ' + ' | '.join(OUTCOMES) + ' |', '|' + '---|' * (2 + len(OUTCOMES))]
    for name, lay in summary['layers'].items():
        lines.append(
            f'| {name} | {lay["requests"]} | ' + ' | '.join(str(lay['outcomes'][o]) for o in OUTCOMES) + ' |'
        )
    lines += ['', '| layer | stage (applied requests) | median | p90 | max |', '|---|---|---|---|---|']
    for name, lay in summary['layers'].items():
        for key, label in STAGES:
            st = lay['stages'][key]
            cells = ['—'] * 3 if st is None else [f'{st[q]:.1f} ms' for q in ('median', 'p90', 'max')]
            lines.append(f'| {name} | {label} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'
