"""Main-thread time per step while scrubbing a big Shapes and a big Tracks layer: napari sync vs ours.

Run (needs a display, e.g. ``xvfb-run -a``)::

    PYTHONPATH=src python benchmarks/bench_layers_other.py [--shapes 20000] [--tracks 50000]
        [--times 500] [--steps 40] [--layers shapes,tracks] [--modes napari-sync,ours]

For each mode a fresh shown viewer gets the layer; the script steps the time/z slider ``--steps``
times and, per step, measures on the main thread:

- ``slicing``: time inside the viewer's slicer ``submit`` calls (napari slices Shapes and Tracks
  synchronously in there) plus, for ours, the apply of the response when it lands (including the
  vispy layer's ``set_data`` handler it triggers);
- ``step``: the whole ``dims.current_step`` assignment (napari's other dims listeners, e.g. the Qt
  slider, are in both modes) plus our apply.

Drawing (vispy paint) is excluded in both. Prints max and median ms per step as JSON; ``slicing``
is also given as main-thread CPU time (``time.thread_time``), which other processes on a busy
machine disturb less than wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

try:
    import napari_async_slicing  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'src'))

import numpy as np


def polygons(n: int, nz: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    ang = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    for i in range(n):
        c = rng.uniform(0, 1000, 2)
        out.append(np.c_[np.full(6, i % nz), c[0] + 8 * np.cos(ang), c[1] + 8 * np.sin(ang)])
    return out


def tracks(n_points: int, n_times: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n_tracks = max(1, n_points // n_times)
    tid = np.repeat(np.arange(n_tracks), n_times)
    t = np.tile(np.arange(n_times), n_tracks)
    yx = np.cumsum(rng.normal(0, 2, (n_tracks * n_times, 2)), axis=0) % 1000
    return np.c_[tid, t, yx]


def scrub(viewer, steps: list[int], timed_apply: list[tuple[float, float]]) -> tuple[list, list, list]:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    slicing, whole, cpu = [], [], []
    slicer = viewer._layer_slicer
    timed_submit: list[tuple[float, float]] = []
    submit = slicer.submit

    def timed(*args, **kwargs):
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return submit(*args, **kwargs)
        finally:
            timed_submit.append((time.perf_counter() - t0, time.thread_time() - c0))

    slicer.submit = timed
    try:
        for z in steps:
            timed_apply.clear()
            timed_submit.clear()
            t0 = time.perf_counter()
            viewer.dims.current_step = (z, *viewer.dims.current_step[1:])
            step = time.perf_counter() - t0
            if hasattr(slicer, 'stats'):  # ours: let the response land and be applied
                slicer.wait_until_idle(timeout=60)
            app.processEvents()
            applied = sum(t for t, _ in timed_apply)
            slicing.append(1000 * (sum(t for t, _ in timed_submit) + applied))
            cpu.append(1000 * (sum(c for _, c in timed_submit) + sum(c for _, c in timed_apply)))
            whole.append(1000 * (step + applied))
    finally:
        del slicer.submit
    return slicing, whole, cpu


def run(mode: str, kind: str, args) -> dict:
    import napari

    import napari_async_slicing
    from napari_async_slicing.layers import _slice

    timed_apply: list[tuple[float, float]] = []
    original_apply = _slice.apply

    def apply(layer, response):
        t0, c0 = time.perf_counter(), time.thread_time()
        original_apply(layer, response)
        timed_apply.append((time.perf_counter() - t0, time.thread_time() - c0))

    if mode == 'ours':
        napari_async_slicing.enable()
        _slice.apply = apply
    try:
        viewer = napari.Viewer(show=True)
        t0 = time.perf_counter()
        if kind == 'shapes':
            nz = args.times
            viewer.add_shapes(polygons(args.shapes, nz), shape_type='polygon')
            size = f'{args.shapes} polygons over {nz} planes'
        else:
            nz = args.times
            viewer.add_tracks(tracks(args.tracks, nz))
            size = f'{args.tracks} points over {nz} time points'
        built = time.perf_counter() - t0
        steps = list(np.linspace(1, nz - 1, args.steps).astype(int))
        scrub(viewer, steps[:2], timed_apply)  # warm up (first async slice, caches)
        slicing, whole, cpu = scrub(viewer, steps, timed_apply)
        viewer.close()
    finally:
        _slice.apply = original_apply
        if mode == 'ours':
            napari_async_slicing.disable()
    return {
        'layer': kind,
        'size': size,
        'mode': mode,
        'build_s': round(built, 1),
        'slicing_max_ms': round(max(slicing), 2),
        'slicing_median_ms': round(statistics.median(slicing), 2),
        'slicing_cpu_median_ms': round(statistics.median(cpu), 2),
        'steps': len(slicing),
        'step_max_ms': round(max(whole), 2),
        'step_median_ms': round(statistics.median(whole), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--shapes', type=int, default=20000)
    parser.add_argument('--tracks', type=int, default=50000)
    parser.add_argument('--times', type=int, default=500)
    parser.add_argument('--steps', type=int, default=40)
    parser.add_argument('--layers', default='shapes,tracks')
    parser.add_argument('--modes', default='napari-sync,ours')
    args = parser.parse_args()
    from qtpy.QtWidgets import QApplication

    from napari.qt import get_qapp

    get_qapp()
    assert QApplication.instance() is not None
    rows = []
    for kind in args.layers.split(','):
        for mode in args.modes.split(','):
            rows.append(run(mode, kind, args))
            print(json.dumps(rows[-1]), flush=True)


if __name__ == '__main__':
    main()
