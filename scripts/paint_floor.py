"""How long the main thread is blocked by showing a new plane, with no slicer involved at all.

The slicing targets ask for main-thread gaps of at most 16 ms while planes change. Whatever a
slicer does, the plane it delivers must still be uploaded to the GPU and painted on the main
thread. This script measures that floor on a real, shown napari viewer (the bench's window size),
with the bench's 3 ms heartbeat, for one 1024x1024 uint16 plane:

- ``idle``: nothing changes (timers, Qt housekeeping);
- ``redraw``: the canvas repaints the same texture every 40 ms (paint only, no upload);
- ``upload``: vispy's image node is handed a new plane every 40 ms (texture upload + paint,
  the least any slicer's apply must cause; no napari code runs);
- ``napari-step``: napari's own synchronous slicing steps an in-memory volume every 40 ms
  (upload + paint + napari's dims/layer-list/thumbnail work).

Run under Xvfb (software GL here) or on a machine with a GPU, and compare:

    bash scripts/run-gui.sh .venv/bin/python scripts/paint_floor.py [--json out/floor.json]

Prints, per case, the maximum main-thread gap, the median over action intervals of the largest gap
in each (what one repaint or step costs), the 95th percentile of all gaps, and the gaps above
16 ms.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=3.0, help='per case (default 3)')
    parser.add_argument('--size', type=int, default=1024, help='plane side (default 1024)')
    parser.add_argument('--interval-ms', type=int, default=40)
    parser.add_argument('--json', help='also write the figures here')
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtCore import QTimer

    from napari_async_slicing import _napari_compat as compat
    from napari_async_slicing._bench._probe import Heartbeat, now, run_for, run_until_quiet

    nz = 64
    volume = np.empty((nz, args.size, args.size), dtype=np.uint16)
    for z in range(nz):
        volume[z] = z * 997 % 65535
    viewer = napari.Viewer(show=True, title='paint floor')
    viewer.window.resize(1024, 800)
    layer = viewer.add_image(volume, contrast_limits=(0, 65535))
    run_for(1.0)
    node = compat.vispy_node(viewer, layer)
    heartbeat = Heartbeat(3).start()
    run_until_quiet(heartbeat, quiet=0.3, timeout=5)

    counter = {'i': 0}

    def redraw() -> None:
        compat.update_canvas(viewer)

    def upload() -> None:
        counter['i'] += 1
        node.set_data(volume[counter['i'] % nz])
        node.update()

    def napari_step() -> None:
        counter['i'] += 1
        viewer.dims.current_step = (counter['i'] % nz, 0, 0)

    cases = {'idle': None, 'redraw': redraw, 'upload': upload, 'napari-step': napari_step}
    results = {}
    for name, action in cases.items():
        timer = QTimer()
        if action is not None:
            timer.timeout.connect(action)
            timer.start(args.interval_ms)
        t0 = now()
        run_for(args.seconds)
        t1 = now()
        timer.stop()
        timed = heartbeat.gaps(t0, t1)
        gaps = [g * 1000 for _, g in timed]
        # The largest gap in each action interval: what one repaint (or step) costs.
        windows: dict[int, float] = {}
        for end, g in timed:
            k = int((end - t0) * 1000 // args.interval_ms)
            windows[k] = max(windows.get(k, 0.0), g * 1000)
        results[name] = {
            'per_interval_gap_ms': round(statistics.median(windows.values()), 1),
            'max_gap_ms': round(max(gaps), 1),
            'median_gap_ms': round(statistics.median(gaps), 1),
            'p95_gap_ms': round(float(np.percentile(gaps, 95)), 1),
            'gaps_over_16ms': sum(1 for g in gaps if g > 16),
            'actions': int(args.seconds * 1000 / args.interval_ms) if action else 0,
        }
        run_until_quiet(heartbeat, quiet=0.3, timeout=5)
    heartbeat.stop()

    from vispy import gloo

    try:
        renderer = gloo.gl.glGetParameter(gloo.gl.GL_RENDERER)
    except Exception:  # noqa: BLE001 - informative only
        renderer = 'unknown'
    facts = {'renderer': str(renderer), 'machine': platform.machine(), 'python': sys.version.split()[0],
             'napari': napari.__version__, 'plane': f'{args.size}x{args.size} uint16',
             'interval_ms': args.interval_ms}
    print(f"renderer: {facts['renderer']}; plane {facts['plane']}, every {args.interval_ms} ms")
    print(f"{'case':<12} {'max gap':>9} {'per action':>11} {'p95':>7} {'gaps>16ms':>10} {'actions':>8}")
    for name, r in results.items():
        print(f"{name:<12} {r['max_gap_ms']:>7.1f}ms {r['per_interval_gap_ms']:>9.1f}ms "
              f"{r['p95_gap_ms']:>5.1f}ms {r['gaps_over_16ms']:>10} {r['actions']:>8}")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'facts': facts, 'cases': results}, f, indent=2)
    viewer.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
