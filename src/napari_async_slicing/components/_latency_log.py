"""Opt-in latency log: one JSON object per request (``NAPARI_ASYNC_SLICING_LOG=<file.jsonl>``).

Fields: ``layer``, ``request_id``, ``step``, ``heavy``, ``wall`` (Unix time at submit),
``started_ms`` / ``data_ready_ms`` / ``applied_ms`` (milliseconds after submit, null when the
stage was not reached) and ``outcome``: ``applied``, ``stale`` (finished but a newer plane was
already shown), ``cancelled`` (stopped mid-read by a newer request), ``dropped`` (replaced before
it started), or ``failed`` (with ``error``). Local only; nothing is sent anywhere.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, TextIO


class LatencyLog:
    def __init__(self, path: str) -> None:
        self._file: TextIO | None = open(path, 'a', buffering=1, encoding='utf-8')  # noqa: SIM115
        self._lock = threading.Lock()

    def record(self, finished: Any, layer: Any, outcome: str) -> None:
        """One request's line (``finished``: a ``Finished``)."""
        now = time.perf_counter()
        task = finished.task

        def ms(t: float | None) -> float | None:
            return None if t is None else round((t - task.submitted) * 1000, 3)

        error = finished.error if outcome == 'failed' else None
        entry = {
            'layer': getattr(layer, 'name', type(layer).__name__) if layer is not None else None,
            'request_id': task.request_id,
            'step': list(task.step),
            'heavy': task.heavy,
            'wall': round(task.wall, 6),
            'started_ms': ms(finished.started),
            'data_ready_ms': ms(finished.data_ready),
            'applied_ms': ms(now) if outcome == 'applied' else None,
            'outcome': outcome,
            'error': None if error is None else f'{type(error).__name__}: {error}',
        }
        line = json.dumps(entry) + '\n'
        with self._lock:
            if self._file is not None:
                self._file.write(line)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
