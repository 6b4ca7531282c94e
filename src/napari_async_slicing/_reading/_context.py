"""What a read needs to know about the request it serves: one frozen value in a ContextVar.

A worker binds it for the request it runs (:func:`reading`); code that runs for the request on
another thread or on the IO loop gets it through ``contextvars.copy_context()``.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from napari_async_slicing._reading._token import NEVER, CancelToken

if TYPE_CHECKING:
    from napari_async_slicing._reading._queue import ReadQueue, Tier


class ReadCounters:
    """Chunk cache hits and misses of one request (its worker, and a reader beside it, count)."""

    __slots__ = ('_lock', 'hits', 'misses')

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def add(self, hits: int, misses: int) -> None:
        with self._lock:
            self.hits += hits
            self.misses += misses


@dataclass(frozen=True, eq=False)
class ReadContext:
    """The request a read serves: how to cancel it, where its chunks come from and go."""

    token: CancelToken = NEVER
    #: The slicer's read queue (and through it the chunk cache); None outside a slicer.
    queue: ReadQueue | None = None
    tier: Tier | None = None  # None: the queue's most urgent (a visible request)
    priority: float = 1.0
    counters: ReadCounters | None = None
    #: Reads this request started ahead of needing them (``LazySource.start``), by what they read.
    started: dict = field(default_factory=dict)
    #: Told of each lazy read (array, selection, coarse): what a request reads, for prefetch.
    observe: Callable[[Any, tuple, bool], None] | None = None
    #: The coarsest level of a multiscale request (its reads are the layer's first looks).
    coarse_array: Any = None
    #: Called once a read's I/O is under way (``Progress.beside(first=True)`` waits for it).
    on_issue: Callable[[], None] | None = None
    #: How a running request shows partial results (progressive multiscale); None: it cannot.
    progress: Any = None
    #: Read from the chunk cache only: a chunk not in it raises :class:`NotCached` (no read).
    cache_only: bool = False
    #: A fast drag's step: seconds a multiscale request waits for a newer step before it reads
    #: its data level (``SliceTask.hold_s``); its coarse level is read at once.
    hold_s: float = 0.0


#: Outside any request: never cancelled, no queue, nothing started ahead (a read-only memo).
OUTSIDE = ReadContext(started=MappingProxyType({}))  # type: ignore[arg-type]

_current: contextvars.ContextVar[ReadContext | None] = contextvars.ContextVar(
    'napari_async_slicing_read', default=None
)


def current() -> ReadContext:
    """The read context bound here (outside a request: :data:`OUTSIDE`)."""
    return _current.get() or OUTSIDE


def current_token() -> CancelToken:
    return current().token


@contextmanager
def reading(context: ReadContext | None = None, **changes: Any) -> Iterator[ReadContext]:
    """Bind ``context`` (or the current one with ``changes``) inside the block."""
    base = context or current()
    value = replace(base, **changes) if changes else base
    reset = _current.set(value)
    try:
        yield value
    finally:
        _current.reset(reset)


def issued() -> None:
    """A read's I/O is under way (or needs none): tell whoever waits for it."""
    callback = current().on_issue
    if callback is not None:
        callback()
