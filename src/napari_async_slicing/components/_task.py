"""A slice task (made on the main thread, never changed) and what running it gave."""

from __future__ import annotations

import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from napari_async_slicing._reading import CancelToken, SliceCancelled


class Outcome(Enum):
    """How a request ended (the latency log's and the stats' words)."""

    APPLIED = 'applied'  # shown
    STALE = 'stale'  # finished, but a newer plane was shown already
    CANCELLED = 'cancelled'  # stopped mid-read by a newer request
    DROPPED = 'dropped'  # replaced before it started
    FAILED = 'failed'
    PREVIEW = 'preview'  # a partial response shown (progressive multiscale)


def plane_of(dims: Any) -> tuple:
    """Which plane a request at ``dims`` shows: the step, dims order and ndisplay."""
    return (
        tuple(getattr(dims, 'current_step', ())),
        tuple(getattr(dims, 'order', ())),
        getattr(dims, 'ndisplay', 2),
    )


@dataclass(frozen=True, eq=False)
class SliceTask:
    """One request for one layer, from submit to apply."""

    layer_ref: weakref.ReferenceType
    request: Any
    request_id: int
    #: The layer's epoch at submit: synchronous slicing since makes the response stale.
    epoch: int
    #: 3D work, run on its own threads so a volume never starves a plane.
    heavy: bool
    #: Which plane it shows (``plane_of``); the first item is the step.
    plane: tuple
    force: bool = False
    #: A fast drag's step (``Move.hold_s``, set at submit): seconds a multiscale request's
    #: data-level reads wait for a next step; its coarse level is read and shown at once.
    hold_s: float = 0.0
    token: CancelToken = field(default_factory=CancelToken)
    #: What ``submit`` returns (napari's API): the response, or the error.
    future: Future = field(default_factory=Future)
    submitted: float = field(default_factory=time.perf_counter)
    wall: float = field(default_factory=time.time)

    @property
    def step(self) -> tuple:
        return self.plane[0]

    @property
    def layer(self) -> Any:
        return self.layer_ref()


@dataclass(frozen=True, eq=False)
class Finished:
    """What running a task gave: its response or the error it met, and when (a value the worker
    returns; nothing is written into the task)."""

    task: SliceTask
    response: Any = None
    error: BaseException | None = None
    started: float | None = None
    data_ready: float | None = None
    hits: int = 0
    misses: int = 0
    #: A partial response of a task still running (progressive multiscale).
    preview: bool = False

    @property
    def cancelled(self) -> bool:
        return isinstance(self.error, SliceCancelled)

    @property
    def compute_s(self) -> float | None:
        if self.started is None or self.data_ready is None:
            return None
        return self.data_ready - self.started


class Dropped(SliceCancelled):
    """The task was replaced before it started."""


def dropped(task: SliceTask) -> Finished:
    """A task replaced before it started."""
    return Finished(task, error=Dropped())


def merged(futures: list[Future]) -> Future:
    """A future of every layer's response (the first real failure, if any)."""
    merged: Future = Future()
    merged.set_running_or_notify_cancel()
    remaining = [len(futures)]
    lock = threading.Lock()
    # Each future holds ``one_done``: it lets go of them once all are done, or that cycle would
    # keep their responses (planes) until a full garbage collection.
    pending = list(futures)

    def one_done(_: Future) -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0]:
                return
            done, pending[:] = pending[:], []
        result: dict = {}
        for future in done:
            if future.cancelled():
                continue
            error = future.exception()
            if error is not None and not isinstance(error, SliceCancelled):
                merged.set_exception(error)
                return
            if error is None:
                result.update(future.result())
        merged.set_result(result)

    for future in pending[:]:
        future.add_done_callback(one_done)
    return merged
