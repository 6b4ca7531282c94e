"""Run every mode in its own subprocess against one HTTP server in this process.

The server runs here, not in the viewer processes, so serving chunks never competes with the
measured main thread for the GIL (as with a real remote store). ``time.perf_counter`` is the
system-wide monotonic clock on Linux, macOS and Windows, so the windows the viewer processes
report can be matched against the server's request log.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import napari_async_slicing
from napari_async_slicing._bench._config import MODES, OME_SCENARIOS, VOLUME_SCENARIOS, BenchSpec
from napari_async_slicing._bench._worker import latency_log_path

XVFB_ARGS = ['xvfb-run', '-a', '-s', '-screen 0 1280x1024x24']


def _volume_shape(path: Path) -> tuple[int, int, int]:
    meta = json.loads((path / 'zarr.json').read_text())
    z, y, x = meta['shape']
    return (int(z), int(y), int(x))


def _chunk_shape(path: Path) -> tuple[int, ...]:
    meta = json.loads((path / 'zarr.json').read_text())
    try:
        return tuple(int(n) for n in meta['chunk_grid']['configuration']['chunk_shape'])
    except (KeyError, TypeError):
        return ()


def _child_env(config_dir: str) -> tuple[dict[str, str], list[str]]:
    """Environment and command prefix for a viewer process (a display, a throwaway config)."""
    env = dict(os.environ)
    env['NAPARI_CONFIG'] = str(Path(config_dir) / 'settings.yaml')
    src = str(Path(napari_async_slicing.__file__).resolve().parents[1])
    env['PYTHONPATH'] = os.pathsep.join([src, *filter(None, [env.get('PYTHONPATH')])])
    env.setdefault('PYTHONUNBUFFERED', '1')
    prefix: list[str] = []
    if sys.platform.startswith('linux') and not env.get('DISPLAY') and not env.get('WAYLAND_DISPLAY'):
        if shutil.which('xvfb-run') is None:
            raise RuntimeError('no display and no xvfb-run: run under xvfb-run or on a desktop')
        prefix = XVFB_ARGS
        env['QT_QPA_PLATFORM'] = 'xcb'
    return env, prefix


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    """Stop the child we started and its own children (it leads its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def run_one_mode(
    mode: str, spec: BenchSpec, workdir: Path, log_dir: Path | None = None, timeout: float | None = None
) -> dict[str, Any]:
    """Run ``mode`` in a fresh subprocess; return its status, facts and records."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / f'spec-{mode}.json'
    out = workdir / f'records-{mode}.jsonl'
    out.unlink(missing_ok=True)
    latency_log = latency_log_path(out, mode)
    latency_log.unlink(missing_ok=True)
    spec_path.write_text(json.dumps(spec.to_json()))
    timeout = spec.mode_timeout_s() if timeout is None else timeout
    log_path = (log_dir or workdir) / f'{mode}.log'
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    status = 'ok'
    with tempfile.TemporaryDirectory(prefix='bench-napari-config-') as cfg, log_path.open('w') as log:
        env, prefix = _child_env(cfg)
        cmd = [
            *prefix,
            sys.executable,
            '-m',
            'napari_async_slicing._bench._worker',
            mode,
            str(spec_path),
            str(out),
        ]
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
            status = 'timeout'
    if rc not in (0, None):
        status = 'failed'
    records = []
    if out.exists():
        for line in out.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                pass
    facts: dict[str, Any] = next((r.get('facts', {}) for r in records if r.get('kind') == 'start'), {})
    profile = next((r for r in records if r.get('kind') == 'stall_profile'), None)
    results = [r for r in records if r.get('kind') == 'result']
    if status != 'ok' and not any(r.get('kind') == 'end' for r in records):
        # Whatever did not report was cut short.
        why = (
            f'mode process failed (exit {rc})'
            if status == 'failed'
            else f'mode process timed out after {timeout:.0f} s'
        )
        last = [ln for ln in _tail(log_path, 5).splitlines() if ln.strip()]
        if last:
            why += f': {last[-1].strip()[:200]}'
        done = {(r['scenario'], r['repeat']) for r in results}
        for name in spec.scenarios:
            for rep in range(spec.repeat):
                if (name, rep) not in done:
                    results.append(
                        {
                            'kind': 'result',
                            'mode': mode,
                            'scenario': name,
                            'repeat': rep,
                            'status': status,
                            'error': why,
                        }
                    )
    summary = None
    if latency_log.exists():
        from napari_async_slicing._bench._fromlog import read_log, summarize

        summary = summarize(read_log(latency_log))
    return {
        'mode': mode,
        'latency_log': summary,
        'status': status,
        'returncode': rc,
        'seconds': time.perf_counter() - t0,
        'facts': facts,
        'results': results,
        'stall_profile': profile,
        'log': str(log_path),
        'log_tail': _tail(log_path) if status != 'ok' else '',
    }


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return '\n'.join(path.read_text(errors='replace').splitlines()[-lines:])
    except OSError:
        return ''


def _count_chunk_requests(log: list[dict[str, Any]], window: list[float], plane: int | None = None) -> int:
    """Chunk requests started in ``window`` (of the volume's ``plane`` only, if given: zarr v3
    chunk keys ``c/<plane>/...``)."""
    from napari_async_slicing.testing._responses import is_metadata_path

    t0, t1 = window
    key = None if plane is None else f'/c/{plane}/'
    return sum(
        1
        for e in log
        if t0 <= e['start'] <= t1
        and not is_metadata_path(e['path'])
        and (key is None or key in '/' + e['path'])
    )


def _count_requests(result: dict[str, Any], log: list[dict[str, Any]]) -> None:
    """Add the HTTP chunk-request counts of the windows the scenarios reported."""
    for r in result['results']:
        extra = r.get('extra') or {}
        if r.get('status') != 'ok':
            continue
        window = extra.get('window')
        if r['scenario'] in ('S1', 'S8') and window:
            r['metrics']['chunk_requests'] = float(_count_chunk_requests(log, window))
        add_window = extra.get('add_window')
        if r['scenario'] == 'S7' and add_window:
            r['metrics']['chunk_requests_during_add'] = float(_count_chunk_requests(log, add_window))
        windows = extra.get('step_windows')
        if r['scenario'] == 'S3' and windows:
            counts = [_count_chunk_requests(log, w) for w in windows]
            extra['chunk_requests'] = counts
            r['metrics']['chunk_requests_per_step'] = float(statistics.median(counts))
        plane_windows = extra.get('plane_windows')
        if r['scenario'] == 'S6' and plane_windows:
            extra['plane_requests'] = [
                _count_chunk_requests(log, [t, shown], int(z)) for t, shown, z in plane_windows
            ]


def run_modes(
    spec: BenchSpec,
    modes: tuple[str, ...] | list[str] = MODES,
    workdir: Path | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Run ``spec`` once per mode (sequentially, each in a fresh process) and collect results."""
    from napari_async_slicing.testing import ZarrHTTPServer, sample_data

    progress = progress or (lambda msg: None)
    own_tmp = None
    if workdir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix='napari-async-slicing-bench-')
        workdir = Path(own_tmp.name)
    servers: dict[Path, Any] = {}  # one HTTP server per folder served (in this process)
    t0 = time.perf_counter()
    max_seconds = len(modes) * spec.mode_timeout_s() + 120

    def serve(path: Path) -> str:
        root = path.parent
        if root not in servers:
            servers[root] = ZarrHTTPServer(root, latency=spec.latency, max_seconds=max_seconds).start()
        return servers[root].url_for(path.name)

    try:
        if VOLUME_SCENARIOS & set(spec.scenarios):
            progress(f'preparing sample volume {spec.size!r} ...')
            path = sample_data('volume', spec.size)
            spec.volume_url = serve(path)
            spec.volume_shape = _volume_shape(path)
        if OME_SCENARIOS & set(spec.scenarios):
            progress(f'preparing sample OME-Zarr {spec.ome_size!r} ...')
            path = sample_data('ome', spec.ome_size)
            spec.ome_url = serve(path)
            spec.ome_shape = _volume_shape(path / '0')
            spec.ome_chunks = _chunk_shape(path / '0')
        modes_out: dict[str, Any] = {}
        for mode in modes:
            progress(f'running {mode} ...')
            for server in servers.values():
                server.wait_idle(5)
                server.reset_counters()
            result = run_one_mode(mode, spec, workdir, log_dir=workdir / 'logs')
            for server in servers.values():
                server.wait_idle(5)
            log = [e for server in servers.values() for e in server.log]
            if log:
                _count_requests(result, log)
            progress(f'{mode}: {result["status"]} in {result["seconds"]:.1f} s')
            modes_out[mode] = result
    finally:
        for server in servers.values():
            server.stop()
        if own_tmp is not None:
            own_tmp.cleanup()
    return {'spec': spec.to_json(), 'modes': modes_out, 'seconds': time.perf_counter() - t0}
