"""A small dock widget with live slicing latency per layer (updated a few times a second)."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtGui import QFont
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget


def _ms(value: float | None) -> str:
    return '   -' if value is None else f'{value:4.0f}'


def format_stats(rows: list[dict]) -> str:
    """Fixed-width text table of ``AsyncLayerSlicer.stats()`` rows."""
    lines = ['layer            last  p50  p95 (ms)  in-flight cancelled failed']
    for r in rows:
        lines.append(
            f"{r['layer'][:15]:15s} {_ms(r['last_ms'])} {_ms(r['p50_ms'])} {_ms(r['p95_ms'])}"
            f"       {r['in_flight']:9d} {r['cancelled'] + r['dropped']:9d} {r['failed']:6d}"
        )
    lines.append('cache hits: n/a (chunk cache not built yet)')
    return '\n'.join(lines)


class LatencyWidget(QWidget):
    """Shows what the viewer's slicer is doing: last/median/p95 latency, in flight, cancelled."""

    def __init__(self, viewer: Any, interval_ms: int = 250) -> None:
        super().__init__()
        self._viewer = viewer
        self.label = QLabel()
        font = QFont('monospace')
        font.setStyleHint(QFont.StyleHint.TypeWriter)
        self.label.setFont(font)
        layout = QVBoxLayout(self)
        layout.addWidget(self.label)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.refresh)
        self._timer.start(interval_ms)
        self.refresh()

    def refresh(self) -> None:
        from napari_async_slicing._napari_compat import layer_slicer

        slicer = layer_slicer(self._viewer)
        if not hasattr(slicer, 'stats'):
            self.label.setText("napari's own slicer is in use: no readout")
            return
        self.label.setText(format_stats(slicer.stats()))
