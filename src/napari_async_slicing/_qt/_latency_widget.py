"""A small dock widget with live slicing latency per layer (updated a few times a second)."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtGui import QFont
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget


def _ms(value: float | None) -> str:
    return '   -' if value is None else f'{value:4.0f}'


def format_stats(rows: list[dict], cache: dict | None = None) -> str:
    """Fixed-width text table of ``AsyncLayerSlicer.stats()`` rows (and ``cache_stats()``)."""
    lines = ['layer            last  p50  p95 (ms)  in-flight cancelled failed  cache hit/miss']
    for r in rows:
        lines.append(
            f"{r['layer'][:15]:15s} {_ms(r['last_ms'])} {_ms(r['p50_ms'])} {_ms(r['p95_ms'])}"
            f"       {r['in_flight']:9d} {r['cancelled'] + r['dropped']:9d} {r['failed']:6d}"
            f"  {r.get('cache_hits', 0):>6d}/{r.get('cache_misses', 0)}"
        )
    if cache is None:
        lines.append('chunk cache: n/a')
    elif not cache['max_bytes']:
        lines.append('chunk cache: off')
    else:
        prefetch = cache.get('prefetch', {})
        lines.append(
            f"chunk cache: {cache['hits']} hits, {cache['misses']} misses,"
            f" {cache['bytes'] / 2**20:.1f} of {cache['max_bytes'] / 2**20:.0f} MiB;"
            f" prefetched {prefetch.get('done', 0)} planes"
        )
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
        cache = slicer.cache_stats() if hasattr(slicer, 'cache_stats') else None
        self.label.setText(format_stats(slicer.stats(), cache))
