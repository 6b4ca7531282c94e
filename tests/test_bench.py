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
from napari_async_slicing._bench._config import MODE_TITLES, READER_CPU_KEYS

from .conftest import wait_until

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


@pytest.fixture(scope='module')
def tiny_bench(tmp_path_factory):
    """One bench run shared by the smoke tests and the asv test (each mode process starts once,
    which keeps this file near 2 minutes): every scenario on the tiny samples, 50 ms per request."""
    out = tmp_path_factory.mktemp('bench') / 'bench'
    argv = ['--quick', '--size', 'tiny', '--repeat', '1', '--latency', '0.05',
            '--scenarios', 'S1,S2,S3,S4,S5,S6,S7,S8', '--out', str(out)]
    assert bench_main(argv) == 0
    return out, (out / 'bench.md').read_text(), json.loads((out / 'bench.json').read_text())


def _records(doc, mode, scenario):
    return [r for r in doc['modes'][mode]['results'] if r['scenario'] == scenario]


def test_bench_main_quick_in_memory(tiny_bench):
    out, md, doc = tiny_bench
    # bench.png needs matplotlib (the 'bench' extra); the table and JSON never do.
    names = ['bench.md', 'bench.json'] + (['bench.png'] if HAVE_MATPLOTLIB else [])
    for name in names:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    _assert_numeric_per_mode(md, ['one step until vispy holds it: median',
                                  'latency of the last of 25 requests'])
    assert 'n/a' not in md  # every scenario is measured
    assert 'napari-async-slicing bench --quick' in md
    assert set(doc['modes']) == set(MODES)
    for mode in MODES:
        assert doc['modes'][mode]['status'] == 'ok', doc['modes'][mode].get('log_tail')
        assert doc['table']['S4']['latency_median_ms'][mode] > 0
    # Each mode ran the slicer it claims to.
    assert doc['modes']['ours']['facts']['ours_enabled'] is True
    assert doc['modes']['napari-async']['facts']['experimental_async'] is True
    assert doc['modes']['napari-sync']['facts'] == {**doc['modes']['napari-sync']['facts'],
                                                    'experimental_async': False, 'ours_enabled': False}


def test_bench_main_remote_scrub_tiny(tiny_bench):
    _, md, doc = tiny_bench
    _assert_numeric_per_mode(md, ['max main-thread gap', 'final-plane latency after last step',
                                  'planes applied', 'HTTP chunk requests',
                                  'main-thread gaps over 8 ms, paint taken out',
                                  'reference: paints (Paint and UpdateRequest events)',
                                  'CPU outside the main thread and GL, whole scrub',
                                  "of it: zarr's IO loop", 'of it: our slicing workers'])
    for mode in MODES:
        (rec,) = _records(doc, mode, 'S1')
        assert rec['status'] == 'ok', rec
        assert rec['extra']['final_plane_correct'] is True
        assert rec['metrics']['planes_applied'] >= 1
        # Paint is measured (the window repaints during a scrub) and taken out of the gaps; the
        # step handler's main-thread CPU is measured.
        m = rec['metrics']
        assert m['paint_ms'] > 0 and m['max_gap_ex_paint_ms'] <= m['max_gap_ms'] + 0.5, m
        # How often it paints, and how many paint-excluded gaps the longest one stands among.
        assert m['paints'] >= 1 and (m['gaps_over_8ms_ex_paint'] >= 1) == (m['max_gap_ex_paint_ms'] > 8), m
        assert 0 < m['step_cpu_ms'] <= m['step_cpu_max_ms'] and m['main_cpu_per_step_ms'] > 0, m
        # CPU per plane shown: the process's, and what is left outside the main thread and GL.
        assert m['process_cpu_per_plane_ms'] > 0 and 0 <= m['reader_cpu_per_plane_ms'] < m['process_cpu_per_plane_ms'], m
        # That CPU by thread: the groups add up to it at most; only ours has slicing workers.
        groups = [m[key] for key in READER_CPU_KEYS]
        assert min(groups) >= 0 and sum(groups) <= m['reader_cpu_ms'] + 1, m
        assert (m['reader_workers_cpu_ms'] > 0) == (mode == 'ours'), m
        assert m['reader_io_cpu_ms'] > 0, m  # every mode reads through zarr's event loop
    # napari's sync slicing shows every step it is asked for.
    expected = min(doc['spec']['steps'], doc['spec']['volume_shape'][0] - 1)
    assert doc['table']['S1']['planes_applied']['napari-sync'] == expected


def test_bench_main_multiscale_and_revisit_tiny(tiny_bench):
    _, md, doc = tiny_bench
    _assert_numeric_per_mode(md, ['step to first pixels of the new plane',
                                  'step to full resolution (the data level',
                                  'full-resolution level napari picks',
                                  'cold jump (nothing of the plane cached): first pixels',
                                  'cold jump: full resolution, median',
                                  'HTTP chunk requests per step',
                                  'revisit: A, B, back to A', 'neighbour: rest on P'])
    assert 'S3: OME-Zarr `tiny`' in md and 'Every mode: canvas' in md  # same canvas and zoom
    spec = doc['spec']
    latency_ms = spec['latency'] * 1000
    for mode in MODES:
        (s3,) = _records(doc, mode, 'S3')
        assert s3['status'] == 'ok', s3
        extra = s3['extra']
        assert len(extra['full_res_ms']) == spec['ome_steps']
        # A tiny image fits the canvas: napari shows level 0, and nothing reads no data.
        assert extra['full_levels'] == [0] * spec['ome_steps']
        assert all(0 < f <= r for f, r in zip(extra['first_pixels_ms'], extra['full_res_ms']))
        if mode != 'ours':  # ours may have prefetched the plane stepped to (R14)
            assert min(extra['full_res_ms']) >= latency_ms
            assert min(extra['chunk_requests']) >= 1
            assert extra['cold_first_pixels_ms'] == extra['first_pixels_ms']  # no cache: all cold
        else:  # cold jumps: its cache emptied, so even the coarse look waits for the server
            assert extra['cold_steps'] == extra['steps'][-2::-1] + [0]
            assert len(extra['cold_first_pixels_ms']) == spec['ome_steps']
            assert min(extra['cold_first_pixels_ms']) >= latency_ms
            assert all(0 < f <= r for f, r in zip(extra['cold_first_pixels_ms'],
                                                   extra['cold_full_res_ms']))
        (s6,) = _records(doc, mode, 'S6')
        assert s6['status'] == 'ok', s6
        assert len(s6['extra']['revisit_ms']) == spec['revisit_trials']
        assert len(s6['extra']['neighbour_ms']) == spec['neighbour_trials']
        if mode == 'ours':  # chunk cache and prefetch: nothing of the plane is requested
            assert s6['extra']['plane_requests'] == [0] * len(s6['extra']['plane_windows'])
        else:  # napari has neither: at least one request latency
            assert s6['metrics']['revisit_ms'] >= latency_ms and s6['metrics']['neighbour_ms'] >= latency_ms
    # Every mode measured the same canvas, zoom and level.
    views = {json.dumps(_records(doc, m, 'S3')[0]['extra']['view'], sort_keys=True) for m in MODES}
    assert len(views) == 1, views


def test_bench_main_dask_multiscale_tiny(tiny_bench):
    """S8: two scrubs over new planes of dask levels; each mode shows the last plane of both."""
    _, md, doc = tiny_bench
    _assert_numeric_per_mode(md, ['scrub 2: final plane after the last step was due'])
    for mode in MODES:
        (rec,) = _records(doc, mode, 'S8')
        assert rec['status'] == 'ok', rec
        assert len(rec['extra']['scrubs']) == 2 and rec['metrics']['planes_applied'] >= 2
        assert rec['metrics']['chunk_requests'] >= 2


def test_bench_main_open_tiny(tiny_bench):
    _, md, doc = tiny_bench
    _assert_numeric_per_mode(md, ['add_image returns after', 'call to the plane dims shows on screen'])
    for mode in MODES:
        (s7,) = _records(doc, mode, 'S7')
        assert s7['status'] == 'ok', s7
    # napari picks limits from plane 0 while the centre plane is shown; ours from the shown plane,
    # which is the only plane ours ever shows.
    assert doc['table']['S7']['clims_fit']['napari-sync'] == 0
    assert doc['table']['S7']['clims_fit']['ours'] == 1
    assert doc['table']['S7']['other_planes_shown']['ours'] == 0


def test_bench_ours_with_a_given_read_engine(tmp_path):
    """``--read-engine tensorstore``: ours reads with it, and the report says so."""
    pytest.importorskip('tensorstore')
    out = tmp_path / 'bench'
    argv = ['--quick', '--size', 'tiny', '--repeat', '1', '--latency', '0.05', '--modes', 'ours',
            '--scenarios', 'S1', '--read-engine', 'tensorstore', '--out', str(out)]
    assert bench_main(argv) == 0
    doc = json.loads((out / 'bench.json').read_text())
    assert doc['spec']['read_engine'] == 'tensorstore'
    assert doc['modes']['ours']['facts']['reads_with'] == 'tensorstore'
    (rec,) = _records(doc, 'ours', 'S1')
    assert rec['status'] == 'ok' and rec['extra']['final_plane_correct'], rec
    stats = rec['tensorstore']  # what the slicer's engine read: the layer's array, all by tensorstore
    assert stats['opened'] == 1 and stats['tensorstore_chunks'] > 0 and stats['zarr_chunks'] == 0
    assert 'Ours reads zarr arrays with tensorstore' in (out / 'bench.md').read_text()


def test_ab_read_engines_table():
    ab = _load_asv_module(REPO / 'scripts' / 'ab_read_engines.py')

    def run(mode, value):
        return {'mode': mode, 'load_before': [1.0], 'load_after': [2.0],
                'results': [{'scenario': 'S1', 'status': 'ok', 'metrics': {'final_after_due_ms': v}}
                            for v in value]}

    doc = {'date': 'today', 'seconds': 60, 'runs': [run('ours-zarr', [100, 120, 140]),
                                                    run('ours-tensorstore', [90, 90]),
                                                    run('napari-async', [300])]}
    md = ab.table(doc)
    row = next(ln for ln in md.splitlines() if 'after the last step was due' in ln)
    assert '| 120 [110-130] | 90.0 | 0.75 |' in row and row.endswith('| 300 |')
    assert 'reps: zarr 3, tensorstore 2, async 1' in md


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


def test_asv_benchmarks_run_once(monkeypatch, tiny_bench):
    """Every asv benchmark once. ``setup_cache`` runs the side-by-side bench through
    ``_bench.run_modes``; here that call is answered with the shared tiny run (same code path,
    same scenarios) instead of starting the three mode processes a second time."""
    import napari_async_slicing._bench as bench_pkg

    _, _, doc = tiny_bench
    monkeypatch.setenv('NAPARI_ASYNC_SLICING_ASV_SIZE', 'tiny')
    monkeypatch.setenv('NAPARI_ASYNC_SLICING_ASV_LATENCY', '0.05')
    asked = []

    def run_modes(spec, modes=MODES, workdir=None, progress=None):
        asked.append((spec, tuple(modes)))
        assert set(spec.scenarios) <= set(doc['spec']['scenarios'])
        assert (spec.size, spec.latency, spec.repeat) == ('tiny', 0.05, 1)
        return {'spec': {**doc['spec'], 'scenarios': list(spec.scenarios)}, 'modes': doc['modes'],
                'seconds': doc['seconds']}

    monkeypatch.setattr(bench_pkg, 'run_modes', run_modes)
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
    assert asked and all(modes == tuple(MODES) for _, modes in asked)
    assert ran >= 3 * 12


def test_stall_profile_leaves_paint_out():
    """The stall profile is of the gaps with paint taken out: samples taken while the main
    thread paints are counted, not profiled."""
    import threading
    import time

    from napari_async_slicing._bench._probe import StallSampler

    class Silent:  # a heartbeat that stopped beating
        last = time.perf_counter()

    painting = threading.Event()
    sampler = StallSampler(Silent(), threshold=0.001, period=0.001, painting=painting.is_set)
    sampler.start()
    try:
        sampler.arm()
        painting.set()
        assert wait_until(lambda: sampler.samples_in_paint >= 5)
        assert sampler.samples == 0
        painting.clear()
        assert wait_until(lambda: sampler.samples >= 5)
    finally:
        sampler.stop()
        sampler.join(5)
    summary = sampler.summary()
    assert summary['samples_in_paint'] >= 5 and summary['samples'] >= 5


def test_s8_starts_each_repetition_with_napari_s_dask_cache_empty():
    """napari's dask cache is process-wide and outlives viewers: S8's planes must be new to
    napari's modes in every repetition, as they are to ours (whose cache goes with its viewer)."""
    import numpy as np
    from napari.utils import resize_dask_cache

    from napari_async_slicing._bench._scenarios import _forget_dask_cache

    cache = resize_dask_cache().cache
    size = cache.available_bytes
    cache.put('a plane read before', np.ones(1 << 16), cost=1e9)
    assert cache.total_bytes > 0
    _forget_dask_cache()
    assert cache.total_bytes == 0
    assert cache.available_bytes == size


def test_spinner_runs_python_for_its_share_of_each_period_and_stops():
    """``--spin``: the thread that stands in for other threads' Python during a repetition."""
    import threading
    import time

    from napari_async_slicing._bench._probe import Spinner

    spinner = Spinner(busy=0.002, period=0.008)
    t0 = time.perf_counter()
    spinner.start()
    threading.Event().wait(0.4)  # let it run a while: its CPU share is what is checked
    spinner.halt()
    wall = time.perf_counter() - t0
    assert not spinner.is_alive()
    assert 0.1 * wall < spinner.cpu < 0.6 * wall  # a quarter of the time, not all of it


@pytest.mark.parametrize('value', ['0,1', '2,1', 'x', '1'])
def test_bench_refuses_a_spin_it_cannot_run(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_main(['--spin', value, '--out', str(tmp_path)])
    assert exc.value.code == 2
    assert '--spin' in capsys.readouterr().err


def test_a_gap_trace_says_what_the_longest_gap_was_made_of(qapp):
    """``--trace-gaps``: every event the main thread delivers is timed, and the longest gap
    lists the one that held it up, by receiver and event type; the heartbeat's clocks say the
    gap was the main thread's own CPU."""
    import time

    from qtpy.QtCore import QCoreApplication, QEvent, QObject

    from napari_async_slicing._bench._probe import Heartbeat, PaintMeter, gap_trace, now, run_for

    class Slow(QObject):
        def event(self, event):
            if event.type() == QEvent.Type.User:
                end = time.perf_counter() + 0.03
                while time.perf_counter() < end:
                    pass
                return True
            return super().event(event)

    quiet, meter, heartbeat, slow = PaintMeter(), PaintMeter(trace=True), Heartbeat(clocks=True).start(), Slow()
    try:
        run_for(0.05)
        t0 = now()
        QCoreApplication.postEvent(slow, QEvent(QEvent.Type.User))
        run_for(0.1)
        t1 = now()
    finally:
        heartbeat.stop()
        meter.stop()
        quiet.stop()
    assert not quiet.events  # only asked for: timing every event costs the main thread a little
    gaps = heartbeat.gaps(t0, t1)
    trace = gap_trace(meter, gaps, meter.without_paint(gaps), t0, t1, heartbeat)
    assert trace['gap_ms'] >= 30
    cpu_ms, _ready_ms = trace['split_ms']
    assert cpu_ms >= 20, trace
    held = [(ms, cpu) for _, ms, cpu, _ready, name in trace['events'] if name == 'Slow User']
    assert held and held[0][0] >= 30 and held[0][1] >= 20, trace['events']  # it spun: CPU too
    count, ms, cpu, _ready, longest = trace['by_event']['Slow User']
    assert count == 1 and longest >= 30 and cpu >= 20
    assert not [e for e in meter.events if e[1] <= t1]  # what was reported is forgotten


def test_bench_writes_a_gap_trace(tmp_path):
    out = tmp_path / 'bench'
    argv = ['--quick', '--size', 'tiny', '--repeat', '1', '--latency', '0.05', '--modes', 'ours',
            '--scenarios', 'S1', '--trace-gaps', '--out', str(out)]
    assert bench_main(argv) == 0
    (rec,) = _records(json.loads((out / 'bench.json').read_text()), 'ours', 'S1')
    assert rec['status'] == 'ok' and len(rec['gap_traces']) == 1, rec
    text = (out / 'gap-trace.txt').read_text()
    assert '== ours, S1: 1 scrubs' in text and 'ms gap with paint taken out' in text
    assert 'MainThreadCaller' in text  # our posted calls, by name


def _schedstat_counts() -> bool:
    """Whether this kernel counts run delay (Linux ``schedstat``; a process has waited a bit).
    Read here, not with ``ready_wait``: a broken ``ready_wait`` must fail the test, not skip it."""
    try:
        return int(Path('/proc/self/schedstat').read_text().split()[1]) > 0
    except (OSError, IndexError, ValueError):
        return False


@pytest.mark.skipif(not _schedstat_counts(), reason='Linux schedstat with run delay counted')
def test_ready_wait_counts_the_time_a_thread_waited_for_a_cpu():
    """A thread that shares its one CPU with a busy process waits for it about half the time;
    alone on it, hardly at all."""
    import os
    import subprocess
    import sys
    import time

    from napari_async_slicing._bench._probe import ready_wait

    def spin_on(cpu: int, seconds: float) -> float:
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpu})
        try:
            r0, t0 = ready_wait(), time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                pass
            return ready_wait() - r0
        finally:
            os.sched_setaffinity(0, before)

    cpu = min(os.sched_getaffinity(0))
    alone = spin_on(cpu, 0.2)
    busy = subprocess.Popen(
        [sys.executable, '-c', f'import os, time; os.sched_setaffinity(0, {{{cpu}}}); print(flush=True)\n'
         't = time.time()\nwhile time.time() - t < 5: pass'], stdout=subprocess.PIPE)
    try:
        assert busy.stdout is not None and busy.stdout.readline() == b'\n'  # it is on that CPU
        shared = spin_on(cpu, 0.4)
    finally:
        busy.kill()
        busy.wait(5)
    assert shared >= 0.1, (alone, shared)
    assert alone < shared / 2, (alone, shared)


def test_bench_without_paint_draws_nothing_and_still_shows_every_plane(tmp_path):
    """``--no-paint``: no paint reaches the window, yet both slicers hand vispy the final plane
    (ours paces its applies by a frame clock that then only ticks by its fallback)."""
    out = tmp_path / 'bench'
    argv = ['--quick', '--size', 'tiny', '--repeat', '1', '--latency', '0.05', '--modes', 'napari-async,ours',
            '--scenarios', 'S1', '--no-paint', '--out', str(out)]
    assert bench_main(argv) == 0
    results = json.loads((out / 'bench.json').read_text())
    for mode in ('napari-async', 'ours'):
        (rec,) = _records(results, mode, 'S1')
        assert rec['status'] == 'ok', rec
        assert rec['metrics']['paint_ms'] == 0 and rec['metrics']['paints'] == 0, rec['metrics']
        assert rec['extra']['final_plane_correct'], rec['extra']
    assert '--no-paint' in (out / 'bench.md').read_text()
