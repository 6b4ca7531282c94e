"""Cancellable, retrying, shared reads of the arrays users hand to napari.

A request runs on a worker with its :class:`ReadContext` bound (:func:`reading`): its
:class:`CancelToken`, the slicer's :class:`ReadQueue` (and chunk cache). napari's request code
indexes a :class:`LazySource`; materialising it reads (:func:`read`): the selection is split
along the array's chunk grid (:class:`ChunkSource`: zarr, dask, other array-likes), cached chunks
are used as they are, and the missing ones are fetched by the read queue on the IO loop, each
retried on its own, shared by everyone who wants it, and stopped when nobody does.
"""

from napari_async_slicing._reading._context import (
    ReadContext,
    ReadCounters,
    current,
    current_token,
    reading,
)
from napari_async_slicing._reading._loop import (
    batched,
    call_on_loop,
    io_loop,
    result_of,
    run_sync,
    start_on_loop,
)
from napari_async_slicing._reading._plan import ChunkPlan
from napari_async_slicing._reading._queue import ChunkRead, ReadQueue, Tier
from napari_async_slicing._reading._read import LazySource, Progress, read, start_read
from napari_async_slicing._reading._retry import is_transient, retried
from napari_async_slicing._reading._sources import (
    ChunkSource,
    Env,
    ReadTogether,
    is_dask_array,
    is_zarr_array,
    source_for,
    zarr_under_dask,
)
from napari_async_slicing._reading._token import (
    NEVER,
    CancelToken,
    NotCached,
    SliceCancelled,
    without_traceback,
)

__all__ = [
    'NEVER',
    'CancelToken',
    'ChunkPlan',
    'ChunkRead',
    'ChunkSource',
    'Env',
    'LazySource',
    'NotCached',
    'Progress',
    'ReadContext',
    'ReadCounters',
    'ReadQueue',
    'ReadTogether',
    'SliceCancelled',
    'Tier',
    'batched',
    'call_on_loop',
    'current',
    'current_token',
    'io_loop',
    'is_dask_array',
    'is_transient',
    'is_zarr_array',
    'read',
    'reading',
    'result_of',
    'retried',
    'run_sync',
    'source_for',
    'start_on_loop',
    'start_read',
    'without_traceback',
    'zarr_under_dask',
]
