"""A small dock widget with live slicing latency per layer (updated a few times a second)."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtGui import QFont
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

MiB = 1024 * 1024

HEADER = (
    f'{"layer":12s} {"last":>4s} {"p50":>4s} {"p95":>4s} ms {"flight":>6s} {"cancel":>6s}'
    f' {"fail":>4s} {"hit%":>5s}'
)


def _ms(value: float | None) -> str:
    return '   -' if value is None else f'{value:4.0f}'


def hit_rate(row: dict) -> float | None:
    """Cache hit rate of a stats row (0..1), or None when the slicer reports no cache."""
    rate = row.get('cache_hit_rate')
    if rate is not None:
        return float(rate)
    hits, misses = row.get('cache_hits'), row.get('cache_misses')
    if hits is None or misses is None:
        return None
    return hits / (hits + misses) if hits + misses else None


def _hits(row: dict) -> str:
    rate = hit_rate(row)
    return '  n/a' if rate is None else f'{rate * 100:4.0f}%'


def cache_line(cache: dict | None) -> str:
    """The chunk cache's totals (``AsyncLayerSlicer.cache_stats()``): bytes used, hits, prefetch."""
    if cache is None:
        return 'chunk cache: n/a'
    if not cache['max_bytes']:
        return 'chunk cache: off'
    prefetch = cache.get('prefetch', {})
    return (
        f'chunk cache: {cache["bytes"] / MiB:.1f} of {cache["max_bytes"] / MiB:.0f} MiB,'
        f' {cache["hits"]} hits, {cache["misses"]} misses;'
        f' prefetched {prefetch.get("done", 0)} planes'
    )


def format_stats(rows: list[dict], cache: dict | None = None) -> str:
    """Fixed-width text table of ``AsyncLayerSlicer.stats()`` rows, then the cache's totals.

    The per-layer hit rate reads ``cache_hit_rate`` (or ``cache_hits``/``cache_misses``) from each
    row and shows ``n/a`` when the slicer does not report it.
    """
    lines = [HEADER]
    for r in rows:
        lines.append(
            f'{r["layer"][:12]:12s} {_ms(r["last_ms"])} {_ms(r["p50_ms"])} {_ms(r["p95_ms"])}'
            f'    {r["in_flight"]:6d} {r["cancelled"] + r["dropped"]:6d} {r["failed"]:4d}'
            f' {_hits(r)}'
        )
    if not rows:
        lines.append('(no layer sliced yet)')
    lines.append(cache_line(cache))
    return '\n'.join(lines)


class LatencyWidget(QWidget):
    """Shows what the viewer's slicer is doing: last/median/p95 latency, in flight, cancelled,
    cache hits and bytes, per layer. One label, its text replaced only when it changes; updated
    every ``interval_ms`` while visible."""

    def __init__(self, viewer: Any, interval_ms: int = 250) -> None:
        super().__init__()
        from napari_async_slicing._napari_compat import unwrap_viewer

        self._viewer = unwrap_viewer(viewer)
        self.label = QLabel()
        font = QFont('monospace')
        font.setStyleHint(QFont.StyleHint.TypeWriter)
        self.label.setFont(font)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.refresh)
        self.refresh()

    # The timer runs only while the readout is visible (docked and not hidden behind a tab).
    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        self.refresh()
        self._timer.start()

    def hideEvent(self, event: Any) -> None:
        self._timer.stop()
        super().hideEvent(event)

    def refresh(self) -> None:
        from napari_async_slicing._napari_compat import layer_slicer

        slicer = layer_slicer(self._viewer)
        if not hasattr(slicer, 'stats') or slicer.is_shut_down:
            text = "napari's own slicer is in use: no readout"
        else:
            cache = slicer.cache_stats() if hasattr(slicer, 'cache_stats') else None
            text = format_stats(slicer.stats(), cache)
        if text != self.label.text():
            self.label.setText(text)
