"""Calls into the IO loop (zarr's own asyncio loop), and the one sync bridge to it.

Every call another thread makes into the loop (``call_soon_threadsafe``) wakes it with a byte
down its self-pipe; the write drops the GIL and the caller may wait a switch interval to get it
back. Inside :func:`batched` a thread's calls are collected and handed over with one wake-up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

from napari_async_slicing._reading._token import CancelToken, SliceCancelled

logger = logging.getLogger(__name__)

#: This thread's calls not yet handed to the loop (inside :func:`batched`), else None.
_pending: contextvars.ContextVar[list | None] = contextvars.ContextVar('loop_calls', default=None)


def io_loop() -> asyncio.AbstractEventLoop:
    """The loop reads run on: zarr's (its sync API runs there too), started on first use."""
    from napari_async_slicing._napari_compat import zarr_event_loop

    return zarr_event_loop()


def call_on_loop(callback: Callable[[], Any]) -> None:
    """Run ``callback`` on the IO loop (at the end of this thread's batch, if inside one)."""
    pending = _pending.get()
    if pending is not None:
        pending.append(callback)
    else:
        io_loop().call_soon_threadsafe(callback)


def _run_all(callbacks: list[Callable[[], Any]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:
            logger.exception('a call on the IO loop failed')


def flush() -> None:
    """Hand this thread's collected calls to the loop now (one wake-up); batching goes on."""
    pending = _pending.get()
    if pending:
        callbacks = pending[:]
        pending.clear()
        io_loop().call_soon_threadsafe(_run_all, callbacks)


@contextmanager
def batched() -> Iterator[None]:
    """Collect this thread's calls into the loop inside the block; wake the loop once at its end."""
    if _pending.get() is not None:  # nested: the outer block flushes
        yield
        return
    reset = _pending.set([])  # the loop is looked up (started) only if a call is made
    try:
        yield
    finally:
        try:
            flush()
        finally:
            _pending.reset(reset)


def start_on_loop(coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
    """Run ``coro`` on the IO loop, in a copy of this thread's context; a future for its result
    whose ``cancel()`` cancels the task (``asyncio.run_coroutine_threadsafe``, batched)."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    context = contextvars.copy_context()

    def begin() -> None:
        if future.cancelled():
            coro.close()
            future.set_running_or_notify_cancel()  # what tells ``futures.wait`` it was cancelled
            return
        task = asyncio.get_running_loop().create_task(coro, context=context)

        def finished(done: asyncio.Task) -> None:
            if done.cancelled():
                future.cancel()
            if not future.set_running_or_notify_cancel():
                return  # cancelled (waiters told now)
            if done.exception() is not None:
                future.set_exception(done.exception())
            else:
                future.set_result(done.result())

        task.add_done_callback(finished)
        future.add_done_callback(lambda f: call_on_loop(task.cancel) if f.cancelled() else None)

    call_on_loop(begin)
    return future


def result_of(future: concurrent.futures.Future, timeout: float | None = None) -> Any:
    """Wait for a future of :func:`start_on_loop`: what it waits for may be in this thread's batch."""
    flush()
    return future.result(timeout)


def run_sync(coro: Coroutine[Any, Any, Any], token: CancelToken) -> Any:
    """The sync bridge: run ``coro`` on the IO loop and wait for it, cancelled with ``token``.

    A cancelled read raises :class:`SliceCancelled`; a task group's failure raises its first error.
    """
    if token.cancelled:
        coro.close()
        raise SliceCancelled
    future = start_on_loop(coro)
    with token.on_cancel(future.cancel):
        try:
            return result_of(future)
        except concurrent.futures.CancelledError:
            raise SliceCancelled from None
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None
