"""Python's thread switch interval while viewers use our slicer (option ``switch_interval``).

The interval is process-wide, so it is held by claims: each live slicer claims the interval its
options ask for, the interpreter runs at the shortest one claimed, and the interval the process had
before the first claim comes back when the last claim is released (a slicer shut down, a viewer
closed, a live swap back to napari's slicer).
"""

from __future__ import annotations

import sys
import threading

_lock = threading.Lock()
_claims: dict[int, float] = {}
_original: float | None = None
_next = 0


def claim(seconds: float) -> int | None:
    """Run the interpreter at ``seconds`` or shorter until :func:`release`; None for 0 (no claim)."""
    global _original, _next
    if not seconds:
        return None
    with _lock:
        if not _claims:
            _original = sys.getswitchinterval()
        _next += 1
        _claims[_next] = seconds
        _set_locked()
        return _next


def release(key: int | None) -> None:
    """Give back a claim (idempotent); the last one restores the interval from before."""
    if key is None:
        return
    with _lock:
        if _claims.pop(key, None) is not None:
            _set_locked()


def _set_locked() -> None:
    """With ``_lock`` held: the shortest claim (never longer than before), or, with none left,
    the interval from before the first claim."""
    global _original
    before = sys.getswitchinterval() if _original is None else _original
    if _claims:
        sys.setswitchinterval(min(*_claims.values(), before))
    else:
        sys.setswitchinterval(before)
        _original = None
