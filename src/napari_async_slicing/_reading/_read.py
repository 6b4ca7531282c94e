"""Reading ``array[selection]`` for a request: the sync side of a read, on the worker.

The chunks the selection needs are looked up in the cache here; the missing ones are fetched by
the read queue on the IO loop (:func:`_loop.run_sync`: cancelled with the request's token), and
the plane is assembled here. napari's request code reaches this through :class:`LazySource`.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_async_slicing._reading._context import OUTSIDE, ReadContext, current, issued, reading
from napari_async_slicing._reading._loop import batched, start_on_loop
from napari_async_slicing._reading._plan import ChunkPlan
from napari_async_slicing._reading._queue import ChunkRead, ReadQueue, Tier
from napari_async_slicing._reading._sources import ChunkSource, ReadTogether, source_for
from napari_async_slicing._reading._token import NotCached, SliceCancelled

_fallback: ReadQueue | None = None
_fallback_lock = threading.Lock()


def _queue_of(context: ReadContext) -> ReadQueue:
    """The request's queue; outside a slicer a shared one with no cache and no timeout."""
    global _fallback
    if context.queue is not None:
        return context.queue
    with _fallback_lock:
        if _fallback is None:
            _fallback = ReadQueue(None)
        return _fallback


def _selection_key(array: Any, selection: tuple) -> tuple:
    return (id(array), tuple((s.start, s.stop, s.step) if isinstance(s, slice) else s for s in selection))


@dataclass(frozen=True)
class _Pending:
    """A read handed to the IO loop: the chunks' future and how to assemble them (or the
    whole selection's future when it is not split into chunks)."""

    future: concurrent.futures.Future
    plan: ChunkPlan | None
    found: dict
    dtype: np.dtype | None

    def result(self) -> np.ndarray:
        token = current().token
        with token.on_cancel(self.future.cancel):
            try:
                value = self.future.result()
            except concurrent.futures.CancelledError:
                raise SliceCancelled from None
            except BaseExceptionGroup as group:
                raise group.exceptions[0] from None
        token.raise_if_cancelled()
        if self.plan is None:
            return value
        return self.plan.assemble({**self.found, **value}, self.dtype)


def _send(array: Any, selection: tuple) -> _Pending:
    """Look ``array[selection]``'s chunks up in the cache, send the missing ones' reads."""
    context = current()
    queue = _queue_of(context)
    source = source_for(array, queue.env)
    cache = queue.cache
    # Dask blocks are cached only if a quarter of the budget holds one (else computed as sliced).
    plan = source.plan(selection, cache.max_bytes // 4 if cache is not None else 0)
    if context.observe is not None:
        context.observe(array, selection, array is context.coarse_array)
    tier = Tier.VISIBLE if context.tier is None else context.tier
    if plan is None and context.cache_only:
        raise NotCached
    if plan is None:
        whole = queue.read_whole(source, selection, context.token)
        return _Pending(start_on_loop(whole), None, {}, None)  # any dtype (a plugin's may be no numpy's)
    found, missing = _look_up(cache, source, plan, context)
    if not missing:
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_result({})
        return _Pending(future, plan, found, source.dtype)
    coro = queue.fetch(missing, tier, context.priority)
    return _Pending(start_on_loop(coro), plan, found, source.dtype)


def _look_up(
    cache: Any, source: ChunkSource, plan: ChunkPlan, context: ReadContext
) -> tuple[dict, list[ChunkRead]]:
    """The plan's chunks found in the cache, and reads of the missing ones; counts both. A
    cache-only read looks without counting and raises :class:`NotCached` at the first miss."""
    found: dict = {}
    missing: list[ChunkRead] = []
    key = source.cache_key(cache) if cache is not None else ('uncached', id(source.array))
    look = None if cache is None else cache.peek if context.cache_only else cache.get
    together = ReadTogether() if source.reads_together else None
    for chunk in plan.chunks:
        value = look((key, chunk)) if look is not None else None
        if value is None:
            if context.cache_only:
                raise NotCached
            missing.append(ChunkRead((key, chunk), source, chunk, plan.region(chunk), together))
        else:
            found[chunk] = value
    if context.counters is not None:
        context.counters.add(len(found), len(missing))
    return found, missing


def start_read(array: Any, selection: tuple) -> None:
    """Start reading ``array[selection]`` now, without waiting: the request's later read of the
    same selection (:func:`read`) joins it instead of reading again."""
    context = current()
    key = _selection_key(array, selection)
    if key not in context.started and context.started is not OUTSIDE.started:
        with batched():
            context.started[key] = _send(array, selection)


def read(array: Any, selection: tuple) -> np.ndarray:
    """Read ``array[selection]`` as numpy, cancellably, with retries, through the cache."""
    context = current()
    context.token.raise_if_cancelled()
    pending = context.started.get(_selection_key(array, selection))
    if pending is None:
        with batched():
            pending = _send(array, selection)
    issued()
    return pending.result()


# --- what napari's request code indexes -------------------------------------------------------


class LazySource:
    """An array-like that records indexing and reads only when materialised.

    napari's slice requests index their data (``data[slices]``), sometimes in two steps, then call
    ``np.asarray``. Wrapping the data in a ``LazySource`` keeps napari's slicing logic unchanged
    while routing the actual read through :func:`read`.
    """

    __slots__ = ('_index', 'array')

    def __init__(self, array: Any, index: tuple[range | int, ...] | None = None) -> None:
        self.array = array
        self._index = tuple(range(n) for n in array.shape) if index is None else index

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(i) for i in self._index if isinstance(i, range))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        dtype = self.array.dtype
        return np.dtype(getattr(dtype, 'numpy_dtype', dtype))  # tensorstore's dtypes have one

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> LazySource:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            at = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = (slice(None),) * (self.ndim - len(key) + 1)
            key = key[:at] + fill + key[at + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        if len(key) != self.ndim:
            raise IndexError(f'too many indices: {len(key)} for {self.ndim} dims')
        keys = iter(key)
        new: list[range | int] = []
        for current_index in self._index:
            if isinstance(current_index, int):
                new.append(current_index)
                continue
            k = next(keys)
            if isinstance(k, slice):
                new.append(current_index[k])
            elif isinstance(k, int | np.integer):
                new.append(current_index[int(k)])
            else:
                raise TypeError(f'LazySource supports ints and slices, not {type(k).__name__}')
        return LazySource(self.array, tuple(new))

    def selection(self) -> tuple[slice | int, ...]:
        out: list[slice | int] = []
        for i in self._index:
            if isinstance(i, int):
                out.append(i)
            elif len(i) == 0:
                out.append(slice(0, 0))
            else:
                out.append(slice(i.start, i[-1] + 1, i.step))
        return tuple(out)

    def start(self) -> None:
        """Start reading now; materialising the same selection later joins this read."""
        start_read(self.array, self.selection())

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = read(self.array, self.selection())
        return data if dtype is None else data.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f'LazySource({type(self.array).__name__}, selection={self.selection()})'


# --- partial results ----------------------------------------------------------------------------

#: How long ``Progress.beside(first=True)`` waits for the other thread's first read to go out.
FIRST_WAIT_S = 0.05


class Progress:
    """How a running request shows a partial result before its final one (progressive multiscale).

    Bound in the request's read context where a partial result can be shown (a worker with a Qt
    main thread to apply it); absent on the inline path, where requests run as napari's.
    """

    def __init__(
        self, publish: Callable[[Any], None], submit: Callable[..., concurrent.futures.Future]
    ) -> None:
        self._publish = publish
        self._submit = submit

    def publish(self, response: Any) -> None:
        """Hand a partial response to the main thread (shown only if still the newest)."""
        self._publish(response)

    def beside(self, fn: Callable[[], Any], *, first: bool = False) -> concurrent.futures.Future:
        """Run ``fn`` on another worker in this request's read context (its reads are cancelled
        with the request's). With ``first``, return once ``fn``'s first read is under way (or
        ``fn`` ended; at most ``FIRST_WAIT_S``): its requests go out, and are answered, first."""
        started = threading.Event()
        context = contextvars.copy_context()

        def run() -> Any:
            with reading(current(), on_issue=started.set):
                try:
                    return fn()
                finally:
                    started.set()

        future = self._submit(context.run, run)
        if first:
            started.wait(FIRST_WAIT_S)
        return future
