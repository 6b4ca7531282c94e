"""Main-thread apply time for Image and Labels as the plane grows: napari's path vs ours.

When a slice arrives, napari's ``QtViewer._on_slice_ready`` converts it for display, recomputes
auto-contrast and the thumbnail and lets vispy cast the dtype, all on the main thread. Ours does
those on the worker (``layers._slice._scalar_field``) and the main thread only sets the results.
This script measures, in one shown viewer, for each case and plane size:

- ``napari apply``: ``QtViewer._on_slice_ready`` with napari's response;
- ``ours apply``: ``layers._slice.apply`` with our worker's response (same request);
- ``... + draw``: the apply plus the next canvas draw (the GPU texture upload, which both need);
- ``ours worker``: what our worker adds after the read (off the main thread).

Medians of ``--repeat`` runs, alternating napari and ours. Run under a display (or xvfb-run)::

    PYTHONPATH=src xvfb-run -a python benchmarks/apply_image_labels.py [--sizes 512,1024] [--json]

asv: ``track_apply_ms`` reads the same numbers (one subprocess per asv run, under xvfb-run if there
is no display; sizes 512² and 2048² unless ``NAPARI_ASYNC_SLICING_ASV_APPLY_SIZES`` says otherwise).
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
except ImportError:  # a clean clone that was not pip-installed: use its src/ layout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'src'))

#: case name -> (layer type, dtype, layer keyword arguments)
CASES = {
    'Image float32, auto-contrast': ('image', 'float32', {'auto_contrast': True}),
    'Image float64': ('image', 'float64', {}),
    'Image uint16, transposed': ('image', 'uint16', {'contrast_limits': (0, 4095)}),
    'Labels int32': ('labels', 'int32', {}),
    # 3D view of a 32 x (n/4) x (n/4) volume: napari max-projects it for the thumbnail
    'Image uint16 volume, 3D': ('image', 'uint16', {'contrast_limits': (0, 4095)}),
}
SIZES = (512, 1024, 2048, 4096)


def _data(kind: str, dtype: str, n: int):
    import numpy as np

    rng = np.random.default_rng(0)
    if n < 0:  # a volume
        side = -n // 4
        return rng.integers(0, 4096, (32, side, side), dtype=dtype)
    if kind == 'labels':
        data = rng.integers(0, 1000, (n, n), dtype=dtype)
    elif dtype.startswith('float'):
        data = rng.random((n, n), dtype='float32').astype(dtype)
    else:
        data = rng.integers(0, 4096, (n, n), dtype=dtype)
    return data


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def measure(sizes=SIZES, repeat: int = 5) -> dict:
    import napari
    from qtpy.QtWidgets import QApplication

    import napari_async_slicing
    from napari_async_slicing import _napari_compat as compat
    from napari_async_slicing.layers import _slice

    napari_async_slicing.enable()
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    results: dict = {}
    try:
        for case, (kind, dtype, kwargs) in CASES.items():
            for n in sizes:
                viewer.layers.clear()
                viewer.dims.ndisplay = 2
                transposed = 'transposed' in case
                volume = 'volume' in case
                data = _data(kind, dtype, -n if volume else n)
                with compat.layer_slicer(viewer).force_sync():
                    add = viewer.add_labels if kind == 'labels' else viewer.add_image
                    layer = add(data, **kwargs)
                if transposed:
                    viewer.dims.order = (1, 0)
                if volume:
                    viewer.dims.ndisplay = 3
                compat.layer_slicer(viewer).wait_until_idle()
                viewer.reset_view()
                app.processEvents()
                request = compat.make_slice_request(layer, viewer.dims)
                napari_response = request()
                ours_request = _slice.prepare(request, layer)
                rows = {k: [] for k in ('napari', 'napari+draw', 'ours', 'ours+draw', 'worker')}
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    compat.napari_on_slice_ready(viewer, layer, napari_response)
                    t1 = time.perf_counter()
                    compat.render_canvas(viewer)
                    t2 = time.perf_counter()
                    rows['napari'].append(t1 - t0)
                    rows['napari+draw'].append(t2 - t0)

                    w0 = time.perf_counter()
                    ours_response = ours_request()
                    w1 = time.perf_counter()
                    t0 = time.perf_counter()
                    _slice.apply(layer, ours_response)
                    t1 = time.perf_counter()
                    compat.render_canvas(viewer)
                    t2 = time.perf_counter()
                    rows['ours'].append(t1 - t0)
                    rows['ours+draw'].append(t2 - t0)
                    rows['worker'].append(w1 - w0)
                    assert _slice._scalar_field.handles_response(layer._slice)
                results.setdefault(case, {})[n] = {k: _median_ms(v) for k, v in rows.items()}
                app.processEvents()
    finally:
        viewer.close()
        napari_async_slicing.disable()
    return results


def table(results: dict) -> str:
    lines = [
        '| case | data | napari apply | ours apply | napari apply+draw | ours apply+draw | ours worker |',
        '|---|---|---|---|---|---|---|',
    ]
    for case, per_size in results.items():
        for n, r in per_size.items():
            shape = f'32×{int(n) // 4}²' if 'volume' in case else f'{n}²'
            lines.append(
                f"| {case} | {shape} | {r['napari']} | {r['ours']} | {r['napari+draw']} | "
                f"{r['ours+draw']} | {r['worker']} |"
            )
    return '\n'.join(lines) + '\n\n(ms, medians)'


def setup_cache() -> dict:
    import os
    import shutil
    import subprocess

    sizes = os.environ.get('NAPARI_ASYNC_SLICING_ASV_APPLY_SIZES', '512,2048')
    cmd = [sys.executable, str(Path(__file__).resolve()), '--json', '--repeat', '5', '--sizes', sizes]
    if not os.environ.get('DISPLAY') and shutil.which('xvfb-run'):
        cmd = ['xvfb-run', '-a', '-s', '-screen 0 1280x1024x24', *cmd]
    env = {**os.environ, 'PYTHONPATH': str(Path(__file__).resolve().parents[1] / 'src')}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


setup_cache.timeout = 900


def track_apply_ms(cache: dict, case: str, path: str) -> float:
    """Main-thread apply time of one 2048² (or the largest measured) plane: napari's vs ours."""
    per_size = cache[case]
    largest = max(per_size, key=int)
    return per_size[largest][path]


track_apply_ms.params = (list(CASES), ['napari', 'ours', 'napari+draw', 'ours+draw'])
track_apply_ms.param_names = ['case', 'path']
track_apply_ms.unit = 'ms'
track_apply_ms.timeout = 900


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', default=','.join(map(str, SIZES)))
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--json', action='store_true', help='print JSON instead of a table')
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(',')]
    results = measure(sizes, args.repeat)
    print(json.dumps(results) if args.json else table(results))


if __name__ == '__main__':
    main()
