"""Running one request on a worker (or inline): what a request's reads need, bound; a value back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from napari_async_slicing._reading import (
    NotCached,
    Progress,
    ReadContext,
    ReadCounters,
    ReadQueue,
    SliceCancelled,
    reading,
    without_traceback,
)
from napari_async_slicing.components._task import Finished, SliceTask

logger = logging.getLogger(__name__)


def run_request(
    task: SliceTask,
    queue: ReadQueue,
    observe: Callable[[Any, tuple, bool], None] | None,
    progress: Progress | None,
    cache_only: bool = False,
) -> Finished:
    """Run ``task``'s request with its token, the read queue, and (where partial results can be
    shown) ``progress`` bound; what it gave, or the error it met. Nothing is written into the task.
    With ``cache_only`` nothing is read: a chunk the cache lacks ends it with ``NotCached``."""
    started = time.perf_counter()
    counters = ReadCounters()
    context = ReadContext(
        token=task.token,
        queue=queue,
        counters=counters,
        observe=observe,
        progress=progress,
        cache_only=cache_only,
        hold_s=task.hold_s,
    )
    response = None
    error: BaseException | None = None
    try:
        task.token.raise_if_cancelled()
        with reading(context):
            response = task.request()
        task.token.raise_if_cancelled()
    except (SliceCancelled, NotCached) as exc:
        error = without_traceback(exc)  # its frames would hold planes (and the task)
    except Exception as exc:
        # The traceback: here (off the main thread, formatted only if debug is on); not kept.
        logger.debug('slice of request %s failed', task.request_id, exc_info=exc)
        error = without_traceback(exc)
    return Finished(
        task, None if error else response, error, started, time.perf_counter(), counters.hits, counters.misses
    )
