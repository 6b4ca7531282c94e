"""Smoke tests of the side-by-side benchmark (``_bench``) and of the asv suite in ``benchmarks/``.

Each mode runs in its own subprocess with a real, shown viewer, so these need a display (the
suite runs under Xvfb; without a display the runner itself wraps the children in xvfb-run).
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import pytest

from napari_async_slicing._bench import MODES, bench_main
from napari_async_slicing._bench._config import MODE_TITLES

REPO = Path(__file__).resolve().parents[1]
HAVE_MATPLOTLIB = importlib.util.find_spec('matplotlib') is not None
NUMBER = re.compile(r'^-?\d+(\.\d+)?( ms|×)?$')


def _table_rows(md: str) -> dict[str, list[str]]:
    """``{metric label: [cell per column]}`` of bench.md's table (scenario column dropped)."""
    lines = [ln for ln in md.splitlines() if ln.startswith('|')]
    header = [c.strip() for c in lines[0].strip('|').split('|')]
    rows = {}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip('|').split('|')]
        rows[cells[1]] = cells[2:]
    rows['__header__'] = header[2:]
    return rows


def _assert_numeric_per_mode(md: str, metric_prefixes: list[str]) -> None:
    rows = _table_rows(md)
    header = rows['__header__']
    for mode in MODES:
        assert MODE_TITLES[mode] in header
    for prefix in metric_prefixes:
        label = next(k for k in rows if k.startswith(prefix))
        for mode in MODES:
            cell = rows[label][header.index(MODE_TITLES[mode])]
            assert NUMBER.match(cell), f'{label!r} for {mode}: {cell!r}'


def test_bench_main_quick_in_memory(tmp_path):
    out = tmp_path / 'bench'
    assert bench_main(['--quick', '--repeat', '1', '--scenarios', 'S4,S5', '--out', str(out)]) == 0
    # bench.png needs matplotlib (the 'bench' extra); the table and JSON never do.
    names = ['bench.md', 'bench.json'] + (['bench.png'] if HAVE_MATPLOTLIB else [])
    for name in names:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    md = (out / 'bench.md').read_text()
    _assert_numeric_per_mode(md, ['one step until vispy holds it: median',
                                  'latency of the last of 25 requests'])
    assert 'n/a' in md  # S3 / S6 are listed, not faked
    assert 'napari-async-slicing bench --quick' in md
    doc = json.loads((out / 'bench.json').read_text())
    assert set(doc['modes']) == set(MODES)
    for mode in MODES:
        assert doc['modes'][mode]['status'] == 'ok', doc['modes'][mode].get('log_tail')
        assert doc['table']['S4']['latency_median_ms'][mode] > 0
    # Each mode ran the slicer it claims to.
    assert doc['modes']['ours']['facts']['ours_enabled'] is True
    assert doc['modes']['napari-async']['facts']['experimental_async'] is True
    assert doc['modes']['napari-sync']['facts'] == {**doc['modes']['napari-sync']['facts'],
                                                    'experimental_async': False, 'ours_enabled': False}


def test_bench_main_remote_scrub_tiny(tmp_path):
    out = tmp_path / 'bench'
    assert bench_main(['--size', 'tiny', '--repeat', '1', '--scenarios', 'S1', '--out', str(out)]) == 0
    md = (out / 'bench.md').read_text()
    _assert_numeric_per_mode(md, ['max main-thread gap', 'final-plane latency after last step',
                                  'planes applied', 'HTTP chunk requests'])
    doc = json.loads((out / 'bench.json').read_text())
    for mode in MODES:
        (rec,) = [r for r in doc['modes'][mode]['results'] if r['scenario'] == 'S1']
        assert rec['status'] == 'ok', rec
        assert rec['extra']['final_plane_correct'] is True
        assert rec['metrics']['planes_applied'] >= 1
    # napari's sync slicing shows every step it is asked for.
    expected = min(doc['spec']['steps'], doc['spec']['volume_shape'][0] - 1)
    assert doc['table']['S1']['planes_applied']['napari-sync'] == expected


def test_bench_main_rejects_unknown_scenarios(tmp_path):
    with pytest.raises(SystemExit):
        bench_main(['--scenarios', 'S9', '--out', str(tmp_path)])


def test_bench_main_from_log(tmp_path, capsys):
    assert bench_main(['--from-log', str(tmp_path / 'missing.jsonl'), '--out', str(tmp_path)]) == 2
    log = tmp_path / 'log.jsonl'
    entries = [
        {'layer': 'remote', 'request_id': 1, 'step': [1, 0, 0], 'heavy': False, 'wall': 0.0,
         'started_ms': 1.0, 'data_ready_ms': 101.0, 'applied_ms': 111.0, 'outcome': 'applied',
         'error': None},
        {'layer': 'remote', 'request_id': 2, 'step': [2, 0, 0], 'heavy': False, 'wall': 0.0,
         'started_ms': 1.0, 'data_ready_ms': None, 'applied_ms': None, 'outcome': 'cancelled',
         'error': None},
    ]
    log.write_text('\n'.join(json.dumps(e) for e in entries) + '\nnot json\n')
    assert bench_main(['--from-log', str(log), '--out', str(tmp_path / 'out')]) == 0
    md = (tmp_path / 'out' / 'bench-log.md').read_text()
    assert '| remote | 2 | 1 | 0 | 1 | 0 | 0 |' in md
    assert '| remote | worker started → data ready | 100.0 ms |' in md
    assert '| remote | submit → applied | 111.0 ms |' in md


def _load_asv_module(path: Path):
    spec = importlib.util.spec_from_file_location(f'asv_{path.stem}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_asv_benchmarks_run_once(monkeypatch):
    monkeypatch.setenv('NAPARI_ASYNC_SLICING_ASV_SIZE', 'tiny')
    monkeypatch.setenv('NAPARI_ASYNC_SLICING_ASV_LATENCY', '0.02')
    config = (REPO / 'asv.conf.json').read_text()
    assert '"benchmark_dir": "benchmarks"' in config and '"repo": "."' in config
    modules = sorted((REPO / 'benchmarks').glob('benchmark*.py'))
    assert modules
    ran = 0
    for path in modules:
        module = _load_asv_module(path)
        tracks = {n: f for n, f in vars(module).items() if n.startswith('track_') and callable(f)}
        assert tracks, path
        cache = module.setup_cache()
        for name, track in tracks.items():
            assert track.__name__ == name  # asv names benchmarks after __name__
            for mode in track.params:
                value = track(cache, mode)
                assert isinstance(value, float) and not math.isnan(value), (name, mode, value)
                ran += 1
    assert ran >= 3 * 8
