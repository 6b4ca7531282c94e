"""Per-layer slicing statistics for live readouts (kept on the main thread, bounded)."""

from __future__ import annotations

import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from napari_async_slicing.components._latency_log import LatencyLog

#: Outcomes a request can end with (see ``_latency_log``).
OUTCOMES = ('applied', 'stale', 'cancelled', 'dropped', 'failed', 'preview')


@dataclass
class LayerStats:
    name: str
    #: Milliseconds from submit to applied, for the most recent applied requests.
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=200))
    counts: dict = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    #: Chunk cache hits and misses of this layer's requests (R13).
    cache_hits: int = 0
    cache_misses: int = 0

    #: Bumped by every ``add`` (``summary`` is reused while nothing changed).
    version: int = 0
    _summary: tuple = field(default=(), repr=False)

    def add(self, outcome: str, submitted: float) -> None:
        self.counts[outcome] += 1
        if outcome == 'applied':
            self.latencies_ms.append((time.perf_counter() - submitted) * 1000)
        self.version += 1  # last: a summary taken meanwhile is not reused

    def add_cache(self, hits: int, misses: int) -> None:
        self.cache_hits += hits
        self.cache_misses += misses

    def summary(self, in_flight: int) -> dict:
        # A live readout calls this a few times a second per layer on the main thread: reuse the
        # last summary while nothing changed, and sort in pure Python (np.percentile costs ~10x
        # more on <= 200 values).
        key = (self.version, in_flight, self.name)
        if self._summary and self._summary[0] == key:
            return dict(self._summary[1])
        lat = sorted(self.latencies_ms)
        summary = {
            'layer': self.name,
            'last_ms': float(self.latencies_ms[-1]) if lat else None,
            'p50_ms': _percentile(lat, 50) if lat else None,
            'p95_ms': _percentile(lat, 95) if lat else None,
            'in_flight': in_flight,
            **self.counts,
            'cache_hits': self.cache_hits,
            'cache_misses': self.cache_misses,
        }
        self._summary = (key, summary)
        return dict(summary)


def _percentile(ordered: list[float], q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation) of already sorted values."""
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


class Recorder:
    """Each request's outcome: the per-layer stats the readouts show, and the opt-in latency log."""

    def __init__(self, log: str | None = None) -> None:
        self._stats: weakref.WeakKeyDictionary[Any, LayerStats] = weakref.WeakKeyDictionary()
        self._log = LatencyLog(log) if log else None

    def record(self, finished: Any, layer: Any, outcome: Any) -> None:
        """Main thread: ``finished`` (a ``Finished``) ended with ``outcome`` (an ``Outcome``)."""
        if layer is not None:
            stats = self._stats.get(layer)
            if stats is None:
                stats = self._stats[layer] = LayerStats(_name(layer))
            stats.add(outcome.value, finished.task.submitted)
            if not finished.preview:
                stats.add_cache(finished.hits, finished.misses)
        if self._log is not None and not finished.preview:
            self._log.record(finished, layer, outcome.value)

    def rows(self, layers: list[Any], in_flight: dict[Any, int]) -> list[dict]:
        """Per layer: latency (last, p50, p95 in ms), requests in flight, outcome counts."""
        rows = []
        for layer in layers:
            stats = self._stats.get(layer) or LayerStats(_name(layer))
            stats.name = getattr(layer, 'name', stats.name)
            rows.append(stats.summary(in_flight.get(layer, 0)))
        return rows

    def forget(self, layer: Any) -> None:
        self._stats.pop(layer, None)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()


def _name(layer: Any) -> str:
    return getattr(layer, 'name', type(layer).__name__)
