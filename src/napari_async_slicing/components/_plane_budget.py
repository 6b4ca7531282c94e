"""How often a scrub may show planes the user has already stepped past.

During a drag every plane that arrives is already superseded by a newer step: showing it is a
bonus (the user sees the data move), but it costs the main thread the apply, the texture upload
and the repaint: 20 ms on a fast software-GL machine, 40 ms on a slow one, where a drag that
steps every 40 ms then falls behind the mouse. So such *intermediate* planes get at most about
half of the main thread: after one is shown, the next waits until its frame is on screen
(``frame_shown``, the canvas's ``frameSwapped``) and as long again has passed. The plane of a
layer's newest request is never held back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Without a frame (no canvas, a hidden window) after this long, stop waiting for it.
FRAME_TIMEOUT_S = 0.25


class PlaneBudget:
    """Main thread only: when the next intermediate plane may be shown."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._shown_at: float | None = None  # an intermediate plane waits for its frame
        self._next = 0.0

    def allows(self) -> bool:
        """May an intermediate plane be shown now?"""
        now = self._clock()
        if self._shown_at is not None:
            if now - self._shown_at < FRAME_TIMEOUT_S:
                return False
            self._shown_at = None  # never painted (hidden): do not wait for it any longer
        return now >= self._next

    def shown(self) -> None:
        """An intermediate plane was just handed to its layer."""
        if self._shown_at is None:
            self._shown_at = self._clock()

    def frame_shown(self) -> None:
        """A frame reached the screen: the plane shown before it cost the time since then."""
        if self._shown_at is None:
            return
        now = self._clock()
        self._next = now + (now - self._shown_at)
        self._shown_at = None
