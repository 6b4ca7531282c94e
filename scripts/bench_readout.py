"""Bench: what the plugin's live readout costs the main thread per update.

``LatencyWidget.refresh`` runs on a QTimer (4 times a second) on the main thread; its budget is
1 ms per update. Measured with real layers whose stats hold a full latency history (200 applied
requests each) on a ``ViewerModel`` using our slicer. Needs a display for the QApplication:

    xvfb-run -a env QT_QPA_PLATFORM=xcb PYTHONPATH=src python scripts/bench_readout.py

(asv-shaped ``TimeReadout`` class, but kept out of ``benchmarks/``: asv runs without a display.)
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

try:
    import napari_async_slicing  # noqa: F401
except ImportError:  # a clean clone that was not pip-installed: use its src/ layout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'src'))  # a clone, not installed


class TimeReadout:
    params = [1, 10]
    param_names = ['layers']

    def setup(self, layers: int) -> None:
        import numpy as np
        from napari.components import ViewerModel
        from qtpy.QtWidgets import QApplication

        import napari_async_slicing
        from napari_async_slicing._qt._latency_widget import LatencyWidget

        self.app = QApplication.instance() or QApplication([])
        with napari_async_slicing.enabled():
            self.viewer = ViewerModel()
        data = np.zeros((220, 16, 16), np.float32)
        for i in range(layers):
            self.viewer.add_image(data, name=f'layer {i}')
        slicer = self.viewer._layer_slicer
        for z in range(220):  # 220 steps: every layer's latency history is full (200)
            self.viewer.dims.current_step = (z, 0, 0)
            slicer.wait_until_idle(timeout=10)
        self.widget = LatencyWidget(self.viewer, interval_ms=10**6)

    def teardown(self, layers: int) -> None:
        self.widget.close()
        self.viewer._layer_slicer.shutdown()

    def time_refresh(self, layers: int) -> None:
        """Worst case: every layer's stats changed since the last tick (a scrub in progress)."""
        for stats in self.viewer._layer_slicer._recorder._stats.values():
            stats.version += 1  # as a new outcome would: the summary is recomputed
        self.widget.label.setText('')  # and the label really updated
        self.widget.refresh()

    def time_refresh_idle(self, layers: int) -> None:
        """Nothing changed since the last tick (the viewer is idle)."""
        self.widget.refresh()


if __name__ == '__main__':
    for n in TimeReadout.params:
        bench = TimeReadout()
        bench.setup(n)
        rows = bench.viewer._layer_slicer.stats()
        assert len(rows) == n and all(r['applied'] >= 200 for r in rows), rows
        for name in ('time_refresh', 'time_refresh_idle'):
            runs = timeit.repeat(lambda: getattr(bench, name)(n), number=200, repeat=5)
            best, worst = min(runs) / 200 * 1000, max(runs) / 200 * 1000
            print(f'{n:2d} layers, {name}: {best:.3f} ms (best of 5 x 200), {worst:.3f} ms (worst)')
        bench.teardown(n)
