"""Per-layer slicing statistics for live readouts (kept on the main thread, bounded)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

#: Outcomes a request can end with (see ``_latency_log``).
OUTCOMES = ('applied', 'stale', 'cancelled', 'dropped', 'failed')


@dataclass
class LayerStats:
    name: str
    #: Milliseconds from submit to applied, for the most recent applied requests.
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=200))
    counts: dict = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    #: Chunk cache hits and misses of this layer's requests (R13).
    cache_hits: int = 0
    cache_misses: int = 0

    def add(self, outcome: str, submitted: float) -> None:
        self.counts[outcome] += 1
        if outcome == 'applied':
            self.latencies_ms.append((time.perf_counter() - submitted) * 1000)

    def add_cache(self, hits: int, misses: int) -> None:
        self.cache_hits += hits
        self.cache_misses += misses

    def summary(self, in_flight: int) -> dict:
        lat = np.asarray(self.latencies_ms, dtype=float)
        return {
            'layer': self.name,
            'last_ms': float(lat[-1]) if lat.size else None,
            'p50_ms': float(np.percentile(lat, 50)) if lat.size else None,
            'p95_ms': float(np.percentile(lat, 95)) if lat.size else None,
            'in_flight': in_flight,
            **self.counts,
            'cache_hits': self.cache_hits,
            'cache_misses': self.cache_misses,
        }
