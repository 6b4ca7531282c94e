"""Transient failures are retried, per chunk, with jittered exponential backoff.

One coroutine (:func:`retried`) bounds each attempt by the read timeout and the retries by the
same window; cancelling the task that awaits it cancels the wait between attempts too.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from napari_async_slicing._reading._token import SliceCancelled

logger = logging.getLogger(__name__)

RETRY_ATTEMPTS = 8
RETRY_BASE_DELAY = 0.05  # seconds; doubles each attempt, with jitter
RETRY_MAX_DELAY = 1.0

_TRANSIENT_NAMES = frozenset(
    {
        'ServerDisconnectedError',
        'ClientConnectionError',
        'ClientOSError',
        'ClientPayloadError',
        'ServerTimeoutError',
        'ClientConnectorError',
    }
)


def backoff(attempt: int) -> float:
    """The wait before attempt ``attempt + 1``: exponential, capped, jittered (0.5x-1.5x)."""
    return min(RETRY_MAX_DELAY, RETRY_BASE_DELAY * 2**attempt) * (0.5 + random.random())


def is_transient(exc: BaseException | None) -> bool:
    """HTTP 5xx, 408, 429, timeouts and dropped connections; never 404s or decoding errors."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, FileNotFoundError | PermissionError | SliceCancelled):
            return False
        status = getattr(exc, 'status', None) or getattr(exc, 'status_code', None)
        if isinstance(status, int):
            return status >= 500 or status in (408, 429)
        if isinstance(exc, TimeoutError | asyncio.TimeoutError | ConnectionError):
            return True
        if type(exc).__name__ in _TRANSIENT_NAMES:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


async def retried(read: Callable[[], Awaitable[Any]], window: float | None) -> Any:
    """``await read()``, each attempt bounded by ``window`` seconds (a stalled server raises
    ``TimeoutError``, which is transient), transient failures retried with backoff: at most
    ``RETRY_ATTEMPTS`` attempts, none started once ``window`` has passed since the first."""
    start = time.monotonic()
    for attempt in range(RETRY_ATTEMPTS):
        try:
            if window is None:
                return await read()
            return await asyncio.wait_for(read(), window)
        except Exception as exc:
            out_of_time = window is not None and time.monotonic() - start >= window
            if attempt == RETRY_ATTEMPTS - 1 or out_of_time or not is_transient(exc):
                raise
            logger.debug('read failed (attempt %d), retrying: %r', attempt + 1, exc)
            del exc  # its traceback holds this frame
            await asyncio.sleep(backoff(attempt))
    raise AssertionError('unreachable')  # pragma: no cover
