"""One interface for every kind of array users hand to napari: :class:`ChunkSource`.

- :class:`ZarrSource`: zarr v3 arrays, read through zarr's async API on the IO loop (cancelling
  the task closes the chunk's HTTP request). Also the zarr array under ``dask.array.from_zarr``.
  Where the slicer reads with tensorstore (``Env.tensorstore``) and the array's store maps to a
  tensorstore spec, its subclass ``_tensorstore.TensorstoreSource`` reads it instead.
- :class:`DaskSource`: dask arrays, each block computed on the read queue's threads with a
  callback that stops issuing tasks once cancelled (or on a ``distributed`` cluster).
- :class:`ArraySource`: any other array-like (a plugin's), indexed on the read queue's threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_async_slicing._reading._context import current, reading
from napari_async_slicing._reading._plan import ChunkPlan, IrregularGrid, RegularGrid
from napari_async_slicing._reading._token import CancelToken, SliceCancelled


@dataclass(frozen=True)
class Env:
    """Where a source's reads run: the read queue's threads (blocking reads), a cluster if any,
    and the slicer's tensorstore engine if zarr arrays are read with it (``_tensorstore``)."""

    executor: concurrent.futures.Executor | None = None
    dask_client: Any = None
    tensorstore: Any = None  # a TensorstoreEngine, or None: zarr-python reads zarr arrays


async def _blocking(env: Env, token: CancelToken, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on ``env``'s threads with ``token`` bound (dask's cancel callback reads it)."""
    context = contextvars.copy_context()

    def run() -> Any:
        with reading(current(), token=token):
            return fn()

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(env.executor, context.run, run)


class ReadTogether:
    """The chunk reads of one request's selection. A source that can (``reads_together``)
    reads those of them that start together as one read; ``split`` once such a read failed:
    each chunk is then retried on its own."""

    __slots__ = ('split',)

    def __init__(self) -> None:
        self.split = False


class ChunkSource(ABC):
    """The chunks of one array, as the read queue fetches them and the cache keeps them."""

    #: Whether :meth:`read_chunk_of` may read a request's chunks as one read.
    reads_together = False

    def __init__(self, array: Any) -> None:
        self.array = array

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        dtype = self.array.dtype
        return np.dtype(getattr(dtype, 'numpy_dtype', dtype))

    def cache_key(self, cache: Any) -> Hashable:
        """The key the chunk cache keeps this data under."""
        return cache.source_key(self.array)

    @abstractmethod
    def plan(self, selection: tuple, max_chunk_bytes: int) -> ChunkPlan | None:
        """How ``selection`` maps onto chunks read one by one; None: read it whole, uncached."""

    @abstractmethod
    async def read_chunk(
        self, chunk: tuple[int, ...], region: tuple[slice, ...], env: Env, token: CancelToken
    ) -> np.ndarray:
        """One chunk (``region`` of the array), on the IO loop."""

    async def read_chunk_of(
        self,
        together: ReadTogether,
        chunk: tuple[int, ...],
        region: tuple[slice, ...],
        env: Env,
        token: CancelToken,
    ) -> np.ndarray:
        """One chunk of a request's selection (``together``: the request's other chunk reads).
        Where several are read as one, each is a view of that read's array."""
        return await self.read_chunk(chunk, region, env, token)

    @abstractmethod
    async def read_whole(self, selection: tuple, env: Env, token: CancelToken) -> np.ndarray:
        """``array[selection]`` in one read, on the IO loop."""


class ZarrSource(ChunkSource):
    def plan(self, selection: tuple, max_chunk_bytes: int) -> ChunkPlan | None:
        try:
            grids = [RegularGrid(n, c) for n, c in zip(self.array.shape, self.array.chunks, strict=True)]
            return ChunkPlan(self.array.shape, grids, selection) if grids else None
        except (NotImplementedError, ValueError, TypeError):
            return None  # irregular chunk grids, negative steps, fancy indexing: read directly

    async def read_chunk(
        self, chunk: tuple[int, ...], region: tuple[slice, ...], env: Env, token: CancelToken
    ) -> np.ndarray:
        return np.asarray(await self.array.async_array.getitem(region))

    async def read_whole(self, selection: tuple, env: Env, token: CancelToken) -> np.ndarray:
        return np.asarray(await self.array.async_array.getitem(selection))


def _dask_pretask(key: Any, dsk: Any, state: Any) -> None:
    current().token.raise_if_cancelled()


#: dask callback tuple (start, start_state, pretask, posttask, finish): stop issuing chunk tasks
#: once the bound token is cancelled. Passed to each compute: dask's global callbacks are swapped
#: out while any compute runs, so a globally registered one misses overlapping computes.
_DASK_CANCEL_CALLBACKS = [(None, None, _dask_pretask, None, None)]

#: Cache dask blocks only when the blocks a selection touches hold at most this many times the
#: bytes it needs; the rest is computed as sliced, uncached.
DASK_BLOCK_OVERREAD = 4


def _local_dask_kwargs(collections: list) -> dict:
    import dask
    from dask import local, threaded

    scheduler = dask.base.get_scheduler(collections=collections)
    local_getters = {threaded.get, local.get_sync}
    try:
        from dask import multiprocessing

        local_getters.add(multiprocessing.get)
    except ImportError:  # pragma: no cover - needs cloudpickle
        pass
    # Local schedulers run ``pretask`` in the thread driving the compute, where our token is bound.
    return {'callbacks': _DASK_CANCEL_CALLBACKS} if scheduler in local_getters else {}


def _compute(collection: Any, env: Env, token: CancelToken) -> np.ndarray:
    if env.dask_client is not None:
        from distributed import CancelledError as DistributedCancelled

        future = env.dask_client.compute(collection)
        with token.on_cancel(lambda: env.dask_client.cancel([future])):
            try:
                return np.asarray(future.result())
            except (DistributedCancelled, concurrent.futures.CancelledError):
                raise SliceCancelled from None
    import dask

    (result,) = dask.compute(collection, **_local_dask_kwargs([collection]))
    return np.asarray(result)


class DaskSource(ChunkSource):
    def plan(self, selection: tuple, max_chunk_bytes: int) -> ChunkPlan | None:
        array = self.array
        if max_chunk_bytes <= 0:
            return None
        try:
            plan = ChunkPlan(array.shape, [IrregularGrid(c) for c in array.chunks], selection)
        except (ValueError, TypeError):
            return None
        if not plan.chunks or any(np.isnan(n) for c in array.chunks for n in c):
            return None
        itemsize = np.dtype(array.dtype).itemsize
        needed = max(1, int(np.prod(plan.out_shape)) * itemsize)
        sizes = [plan.chunk_bytes(chunk, itemsize) for chunk in plan.chunks]
        if sum(sizes) > DASK_BLOCK_OVERREAD * needed + max(sizes) or max(sizes) > max_chunk_bytes:
            return None
        return plan

    async def read_chunk(
        self, chunk: tuple[int, ...], region: tuple[slice, ...], env: Env, token: CancelToken
    ) -> np.ndarray:
        block = self.array.blocks[chunk]
        return await _blocking(env, token, lambda: _compute(block, env, token))

    async def read_whole(self, selection: tuple, env: Env, token: CancelToken) -> np.ndarray:
        sliced = self.array[selection]
        return await _blocking(env, token, lambda: _compute(sliced, env, token))


class ArraySource(ChunkSource):
    def plan(self, selection: tuple, max_chunk_bytes: int) -> ChunkPlan | None:
        return None

    async def read_chunk(
        self, chunk: tuple[int, ...], region: tuple[slice, ...], env: Env, token: CancelToken
    ) -> np.ndarray:  # pragma: no cover - never planned
        raise NotImplementedError

    async def read_whole(self, selection: tuple, env: Env, token: CancelToken) -> np.ndarray:
        array = self.array

        def index() -> np.ndarray:
            token.raise_if_cancelled()
            return np.asarray(array[selection])

        return await _blocking(env, token, index)


def is_zarr_array(array: Any) -> bool:
    try:
        import zarr
    except ImportError:  # pragma: no cover
        return False
    return isinstance(array, zarr.Array)


def is_dask_array(array: Any) -> bool:
    try:
        import dask.array as da
    except ImportError:  # pragma: no cover
        return False
    return isinstance(array, da.Array)


def zarr_under_dask(array: Any) -> Any:
    """The zarr array of ``da.from_zarr(z)`` as it came (no graph on top, the same chunks),
    read here rather than by dask; None for anything else."""
    if not is_dask_array(array):
        return None
    try:
        layers = array.__dask_graph__().layers
        if len(layers) != 2 or array.name not in layers:
            return None
        (other,) = (layer for name, layer in layers.items() if name != array.name)
        values = list(other.values()) if len(other) == 1 else []
        source: Any = values[0] if values else None
        if not is_zarr_array(source) or source.shape != array.shape or source.dtype != array.dtype:
            return None
        import dask.array as da

        if da.core.normalize_chunks(source.chunks, source.shape) != array.chunks:
            return None
    except Exception:  # noqa: BLE001 - an unusual graph: dask reads it
        return None
    return source


def _zarr_source(array: Any, env: Env) -> ChunkSource:
    """tensorstore's source where the slicer reads with it and ``array``'s store maps, else
    zarr-python's."""
    if env.tensorstore is not None:
        source = env.tensorstore.source(array)
        if source is not None:
            return source
    return ZarrSource(array)


def source_for(array: Any, env: Env) -> ChunkSource:
    """The chunk source that reads ``array`` (with a cluster bound, dask arrays stay dask's)."""
    if is_zarr_array(array):
        return _zarr_source(array, env)
    if is_dask_array(array):
        under = zarr_under_dask(array) if env.dask_client is None else None
        return _zarr_source(under, env) if under is not None else DaskSource(array)
    return ArraySource(array)
