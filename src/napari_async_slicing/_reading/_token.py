"""Cancellation of a request's reads: a one-way flag with callbacks."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class SliceCancelled(Exception):
    """Raised inside a read when its request was superseded or the slicer shut down."""


class NotCached(Exception):
    """Raised inside a cache-only read (``ReadContext.cache_only``) that needs a chunk the cache
    does not hold."""


class CancelToken:
    """A one-way flag plus callbacks to run on cancel (e.g. cancelling a read on the IO loop)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], Any]] = []

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise SliceCancelled

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early (and raising) if cancelled."""
        if self._event.wait(seconds):
            raise SliceCancelled

    def add_callback(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` when the token is cancelled (now, if it already is)."""
        with self._lock:
            run_now = self._event.is_set()
            if not run_now:
                self._callbacks.append(callback)
        if run_now:
            callback()

    def remove_callback(self, callback: Callable[[], Any]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    @contextmanager
    def on_cancel(self, callback: Callable[[], Any]) -> Iterator[None]:
        """Run ``callback`` if the token is cancelled while inside the block."""
        self.add_callback(callback)
        try:
            yield
        finally:
            self.remove_callback(callback)


def without_traceback(error: BaseException) -> BaseException:
    """``error`` with the tracebacks along its cause and context chain dropped, to be kept.

    A traceback keeps each frame it passes through and, through ``f_back``, every caller's, with
    their locals: a failed or cancelled read's chunks and planes, and what stores the error (a
    reference cycle: only a full garbage collection frees it, every 20-30 s during a scrub). Log
    it first if it is wanted.
    """
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        link.__traceback__ = None
        link = link.__cause__ or link.__context__
    return error


#: The token of code that runs outside any request: never cancelled.
NEVER = CancelToken()
