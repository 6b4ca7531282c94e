"""How the step moves: the direction of motion (for prefetch), steady strides (read-ahead), and
how long a fast drag's data-level reads wait for the next step (multiscale)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

#: Steps further apart than this are not a steady scrub (no read-ahead).
STEADY_INTERVAL_S = 1.0
#: Steps closer than this are a fast drag (a slider dragged, a key held; napari's play up to 12
#: frames a second is not): a multiscale layer shows each step's coarse level and reads the data
#: level only once no next step came for ``HOLD_STEPS`` step intervals.
FAST_INTERVAL_S = 0.08
HOLD_STEPS = 1.25


@dataclass(frozen=True)
class Move:
    """One step of a layer: the world axis that moved and by how much, and whether the move
    repeats the last one (the same stride, within ``STEADY_INTERVAL_S``: a drag at constant
    speed, a held arrow key, napari's play button)."""

    axis: int
    stride: int
    steady: bool
    #: Seconds since the layer's step before (None: its first move).
    interval: float | None = None

    @property
    def hold_s(self) -> float:
        """How long this step's data-level reads wait for a next step: a fast drag's step is
        likely superseded before they end (0: read at once). Any stride: a dragged slider skips
        planes unevenly."""
        if self.interval is None or self.interval > FAST_INTERVAL_S:
            return 0.0
        return HOLD_STEPS * self.interval


class Motion:
    """A layer's steps, one after another (main thread)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.last_step: tuple | None = None
        self.last_move: Move | None = None
        #: The world axis that moved last and its sign (+1, -1): where prefetch looks first.
        self.direction: tuple[int, int] | None = None
        self._stepped_at: float | None = None

    def step(self, step: tuple) -> Move | None:
        """Record ``step``; the move it made, or None (the same step, a jump on several axes,
        or a change of dimensionality)."""
        last, self.last_step = self.last_step, step
        if last is None or len(last) != len(step):
            self.last_move = None
            return None
        moved = [i for i, (a, b) in enumerate(zip(last, step, strict=True)) if a != b]
        if not moved:
            return self.last_move  # the same step again (napari submits each step twice)
        now = self._clock()
        previous, self._stepped_at = self._stepped_at, now
        if len(moved) != 1:
            self.last_move = None
            return None
        axis = moved[0]
        stride = step[axis] - last[axis]
        before = self.last_move
        self.direction = (axis, 1 if stride > 0 else -1)
        steady = (
            before is not None
            and (before.axis, before.stride) == (axis, stride)
            and previous is not None
            and now - previous < STEADY_INTERVAL_S
        )
        self.last_move = Move(axis, stride, steady, None if previous is None else now - previous)
        return self.last_move
