"""One mode's process: ``python -m napari_async_slicing._bench._worker MODE SPEC.json OUT.jsonl``.

Sets the mode up before any viewer exists, runs every requested scenario ``repeat`` times on fresh
viewers and appends one JSON record per repetition to ``OUT.jsonl`` (flushed at once, so the
parent keeps what finished even if it has to kill a hung process).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from napari_async_slicing._bench._config import MODES, BenchSpec


def setup_mode(mode: str, latency_log: str = '', read_engine: str = 'auto') -> dict[str, Any]:
    """Select a slicer for viewers created from now on; return facts about the mode."""
    from napari.settings import get_settings

    import napari_async_slicing

    if mode not in MODES:
        raise ValueError(f'mode must be one of {MODES}, not {mode!r}')
    settings = get_settings()
    # NAPARI_CONFIG points at a throwaway file (the runner sets it), so nothing persists.
    settings.experimental.async_ = mode == 'napari-async'
    facts: dict[str, Any] = {}
    if mode == 'ours':
        from napari_async_slicing._reading._tensorstore import uses_tensorstore

        napari_async_slicing.enable(read_engine=read_engine, **({'log': latency_log} if latency_log else {}))
        facts['read_engine'] = read_engine
        facts['reads_with'] = 'tensorstore' if uses_tensorstore(read_engine) else 'zarr'
    else:
        napari_async_slicing.disable()
    return {
        'experimental_async': bool(settings.experimental.async_),
        'ours_enabled': napari_async_slicing.is_enabled(),
        **facts,
    }


def latency_log_path(out: Path, mode: str) -> Path:
    """Where the ``mode`` process writes our slicer's latency log (next to its records)."""
    return out.parent / f'latency-{mode}.jsonl'


def _write(out: Path, record: dict[str, Any]) -> None:
    with out.open('a') as f:
        f.write(json.dumps(record, default=_json_default) + '\n')
        f.flush()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, 'item'):
        return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(type(obj))


def run_mode(mode: str, spec: BenchSpec, out: Path) -> int:
    import napari

    from napari_async_slicing._bench._scenarios import RUNNERS, Context

    facts = setup_mode(mode, str(latency_log_path(out, mode)) if spec.latency_log else '', spec.read_engine)
    app = napari.qt.get_qapp()
    facts.update(_gl_facts())
    _write(out, {'kind': 'start', 'mode': mode, 'facts': facts, 'time': time.perf_counter()})
    ctx = Context(spec)
    try:
        for name in spec.scenarios:
            runner = RUNNERS.get(name)
            for rep in range(spec.repeat):
                record: dict[str, Any] = {'kind': 'result', 'mode': mode, 'scenario': name, 'repeat': rep}
                if runner is None:
                    record.update(status='error', error=f'unknown scenario {name!r}')
                    _write(out, record)
                    break
                t0 = time.perf_counter()
                try:
                    ctx.engine_stats = None
                    metrics, extra = runner(ctx)
                    record.update(status='ok', metrics=metrics, extra=extra)
                    if ctx.engine_stats is not None:  # what tensorstore read (ours only)
                        record['tensorstore'] = ctx.engine_stats
                except Exception as exc:  # noqa: BLE001 - reported, never crashes the run
                    record.update(
                        status='error',
                        error=f'{type(exc).__name__}: {exc}',
                        traceback=traceback.format_exc(limit=6),
                    )
                finally:
                    ctx.stop_spinning()
                    if ctx.gap_traces:
                        record['gap_traces'], ctx.gap_traces = ctx.gap_traces, []
                    ctx.paint.events.clear()
                record['seconds'] = time.perf_counter() - t0
                _write(out, record)
        if ctx.sampler is not None:
            _write(out, {'kind': 'stall_profile', 'mode': mode, **ctx.sampler.summary()})
    finally:
        ctx.close()
        app.processEvents()
    _write(out, {'kind': 'end', 'mode': mode})
    return 0


def _gl_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {}
    try:
        import napari
        import qtpy
        import vispy
        import zarr

        facts.update(
            napari=napari.__version__,
            vispy=vispy.__version__,
            zarr=zarr.__version__,
            qt_api=qtpy.API_NAME,
            qt=qtpy.QT_VERSION,
        )
    except Exception:  # noqa: BLE001 - facts are best effort
        pass
    try:
        from importlib.metadata import version

        facts['tensorstore'] = version('tensorstore')
    except Exception:  # noqa: BLE001 - not installed
        pass
    return facts


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print(
            'usage: python -m napari_async_slicing._bench._worker MODE SPEC.json OUT.jsonl', file=sys.stderr
        )
        return 2
    mode, spec_path, out = argv
    spec = BenchSpec.from_json(json.loads(Path(spec_path).read_text()))
    return run_mode(mode, spec, Path(out))


if __name__ == '__main__':
    sys.exit(main())
