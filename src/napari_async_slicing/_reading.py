"""Cancellable, retrying reads of the arrays users hand to napari.

A slice request runs on a worker thread with a :class:`CancelToken` bound to that thread
(:func:`bound_token`). Data access goes through :class:`LazySource`, which composes napari's
indexing lazily and reads only when napari materialises it (``np.asarray``):

- zarr v3 arrays are read through zarr's async API on zarr's own event loop, so cancelling the
  token cancels the in-flight chunk requests;
- dask arrays are computed with a callback that stops issuing chunk tasks once cancelled;
- anything else (numpy, plugin array-likes) is indexed directly, checking the token before.

With a :class:`~napari_async_slicing._cache.ChunkCache` bound (:func:`bound_reading`), zarr and
dask reads go chunk by chunk: the selection is split along the chunk grid (dask: its blocks),
cached decoded chunks are used as they are, only the missing ones are fetched (concurrently, on
zarr's loop, still cancellable), stored, and the plane is assembled from them.

Transient failures (HTTP 5xx, 408, 429, timeouts, dropped connections) are retried with jittered
exponential backoff before the error reaches the user, each zarr chunk on its own (a dask array
that is ``da.from_zarr`` of a zarr array is read as that zarr array).
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class SliceCancelled(Exception):
    """Raised inside a worker when its request was superseded or the slicer shut down."""


class CancelToken:
    """A one-way flag plus callbacks to run on cancel (e.g. cancelling zarr futures)."""

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

    @contextmanager
    def on_cancel(self, callback: Callable[[], Any]) -> Iterator[None]:
        """Run ``callback`` if the token is cancelled while inside the block."""
        self.add_callback(callback)
        try:
            yield
        finally:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)


_NEVER = CancelToken()
_local = threading.local()


# --- calls into zarr's event loop -----------------------------------------------------------
# Every call made from another thread wakes the loop (a byte down its self-pipe). The send drops
# the GIL, and getting it back behind a worker that is decoding costs the caller up to a switch
# interval: one step of a scrub makes a dozen such calls (reads sent, prefetch and superseded
# reads cancelled). Inside ``loop_calls_batched`` a thread's calls are collected and the loop is
# woken once for all of them, in order.


def _zarr_loop() -> asyncio.AbstractEventLoop:
    from napari_async_slicing._napari_compat import zarr_event_loop

    return zarr_event_loop()


def _call_on_loop(callback: Callable[[], Any]) -> None:
    pending = getattr(_local, 'loop_calls', None)
    if pending is not None:
        pending.append(callback)
    else:
        _zarr_loop().call_soon_threadsafe(callback)


def _run_calls(callbacks: list[Callable[[], Any]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:  # noqa: BLE001  (as the loop would: report, go on with the rest)
            logger.exception('a call on zarr\'s event loop failed')


def flush_loop_calls() -> None:
    """Hand this thread's collected calls to the loop now (one wake-up); batching goes on."""
    pending = getattr(_local, 'loop_calls', None)
    if pending:
        callbacks = pending[:]
        pending.clear()
        _zarr_loop().call_soon_threadsafe(_run_calls, callbacks)


def result_of(future: concurrent.futures.Future, timeout: float | None = None) -> Any:
    """Wait for a future of :func:`start_on_loop`: what it waits for may be in this thread's batch."""
    flush_loop_calls()
    return future.result(timeout)


@contextmanager
def loop_calls_batched() -> Iterator[None]:
    """Collect this thread's calls into zarr's loop in the block; wake the loop once at its end."""
    if getattr(_local, 'loop_calls', None) is not None:  # nested: the outer block flushes
        yield
        return
    _local.loop_calls = []  # zarr's loop is looked up (started) only if a call is made
    try:
        yield
    finally:
        try:
            flush_loop_calls()
        finally:
            _local.loop_calls = None


def start_on_loop(coro: Any) -> concurrent.futures.Future:
    """Run ``coro`` on zarr's loop; a future for its result, whose ``cancel()`` cancels it
    (what ``asyncio.run_coroutine_threadsafe`` does, but both go through ``_call_on_loop``)."""
    future: concurrent.futures.Future = concurrent.futures.Future()

    def begin() -> None:
        if future.cancelled():
            coro.close()
            future.set_running_or_notify_cancel()  # what tells ``futures.wait`` it was cancelled
            return
        task = asyncio.get_running_loop().create_task(coro)

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
        future.add_done_callback(
            lambda f: _call_on_loop(task.cancel) if f.cancelled() else None
        )

    _call_on_loop(begin)
    return future


def current_token() -> CancelToken:
    """The token bound to this thread by :func:`bound_token`, or one that is never cancelled."""
    return getattr(_local, 'token', None) or _NEVER


@contextmanager
def _bound(name: str, value: Any) -> Iterator[None]:
    """Bind ``value`` as ``name`` to this thread inside the block."""
    previous = getattr(_local, name, None)
    setattr(_local, name, value)
    try:
        yield
    finally:
        setattr(_local, name, previous)


def bound_token(token: CancelToken) -> AbstractContextManager[None]:
    """Bind ``token`` to this thread while a request runs."""
    return _bound('token', token)


class NeedsIO(Exception):
    """A cache-only read (the inline main-thread path) met a chunk that is not cached."""


class Prefetched(Exception):
    """A prefetch's read was sent: ``future`` completes when its chunks are in the cache (None:
    they already were, or the read was done in place). The rest of the request (thumbnail,
    contrast, display conversion) is not needed, so the read ends the request here."""

    def __init__(self, future: concurrent.futures.Future | None = None) -> None:
        super().__init__()
        self.future = future


class ReadCounters:
    """Chunk cache hits and misses of one request (summed into the layer's stats)."""

    __slots__ = ('hits', 'misses')

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0


@contextmanager
def bound_reading(
    cache: Any = None,
    *,
    counters: ReadCounters | None = None,
    cache_only: bool = False,
    send_missing: bool = False,
    dask_client: Any = None,
    read_timeout: float | None = None,
    prefetch: bool = False,
) -> Iterator[None]:
    """Bind the chunk cache (and where reads count, whether they may do I/O) to this thread.

    ``read_timeout`` (seconds) bounds each zarr chunk read and the window in which transient
    failures are retried. With ``prefetch`` the first read only fills the cache and raises
    :class:`Prefetched` (zarr chunk reads are sent, not waited for). With ``cache_only`` a read
    that misses raises :class:`NeedsIO`; with ``send_missing`` too, a zarr read first sends its
    missing chunks' reads (cancelled with the bound token), for the worker that retries it to join.
    """
    bindings = {
        'cache': cache,
        'counters': counters,
        'cache_only': cache_only,
        'send_missing': send_missing,
        'dask_client': dask_client,
        'read_timeout': read_timeout or None,
        'prefetch': prefetch,
    }
    with ExitStack() as stack:
        for name, value in bindings.items():
            stack.enter_context(_bound(name, value))
        yield


class Progress:
    """How a running request shows a partial result before its final one (progressive multiscale).

    Bound to the worker thread by the slicer (:func:`bound_progress`) only where a partial
    result can be shown (a worker with a Qt main thread to apply it); absent on the inline and
    prefetch paths, where requests run as napari's.
    """

    def __init__(
        self, publish: Callable[[Any], None], executor: concurrent.futures.Executor
    ) -> None:
        self._publish = publish
        self._executor = executor

    def publish(self, response: Any) -> None:
        """Hand a partial response to the main thread (shown only if still the newest)."""
        self._publish(response)

    def beside(self, fn: Callable[[], Any], *, first: bool = False) -> concurrent.futures.Future:
        """Run ``fn`` on another thread with this thread's token and reading bindings.

        Its reads are cancelled with the request's: they share the token. With ``first``, return
        once ``fn``'s first read is in flight (or ``fn`` ended; at most ``FIRST_WAIT_S``): its
        requests go out, and are answered, before the caller's.
        """
        names = ('token', 'cache', 'counters', 'cache_only', 'dask_client', 'read_timeout')
        snapshot = {name: getattr(_local, name, None) for name in names}
        issued = threading.Event()

        def run() -> Any:
            previous = {name: getattr(_local, name, None) for name in (*names, 'on_issue')}
            _local.__dict__.update(snapshot, on_issue=issued.set)
            try:
                return fn()
            finally:
                issued.set()
                _local.__dict__.update(previous)

        future = self._executor.submit(run)
        if first:
            issued.wait(FIRST_WAIT_S)
        return future


#: How long ``Progress.beside(first=True)`` waits for the other thread's first read to go out.
FIRST_WAIT_S = 0.05


def _issued() -> None:
    """A read's I/O is in flight (or needs none): tell whoever waits for it (``beside``)."""
    callback = getattr(_local, 'on_issue', None)
    if callback is not None:
        callback()


def current_progress() -> Progress | None:
    """The :class:`Progress` bound to this thread, if partial results can be shown."""
    return getattr(_local, 'progress', None)


def bound_progress(progress: Progress | None) -> AbstractContextManager[None]:
    """Bind ``progress`` to this thread while a request runs (None: no partial results)."""
    return _bound('progress', progress)


def _read_timeout() -> float | None:
    return getattr(_local, 'read_timeout', None)


async def _timed(awaitable: Any, timeout: float | None) -> Any:
    """Await a chunk read; a stalled one raises ``TimeoutError`` (transient: retried)."""
    if timeout is None:
        return await awaitable
    return await asyncio.wait_for(awaitable, timeout)


def _bound_cache() -> Any:
    cache = getattr(_local, 'cache', None)
    return cache if cache is not None and cache.enabled else None


# --- retry ---------------------------------------------------------------------------------

RETRY_ATTEMPTS = 8
RETRY_BASE_DELAY = 0.05  # seconds; doubles each attempt, with jitter
RETRY_MAX_DELAY = 1.0


def _backoff(attempt: int) -> float:
    """The wait before attempt ``attempt + 1``: exponential, capped, jittered (0.5x-1.5x)."""
    return min(RETRY_MAX_DELAY, RETRY_BASE_DELAY * 2**attempt) * (0.5 + random.random())


def is_transient(exc: BaseException) -> bool:
    """HTTP 5xx, timeouts and dropped connections; never 404s or decoding errors."""
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
        name = type(exc).__name__
        if name in {
            'ServerDisconnectedError',
            'ClientConnectionError',
            'ClientOSError',
            'ClientPayloadError',
            'ServerTimeoutError',
            'ClientConnectorError',
        }:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def with_retry(read: Callable[[], Any], token: CancelToken) -> Any:
    """Call ``read``; retry transient failures with bounded, cancellable backoff (reads that are
    not split into chunk reads: those retry each chunk, :func:`_retried`).

    At most ``RETRY_ATTEMPTS`` attempts, and none started after the bound read timeout has passed
    since the first (a stalled server is reported after one timeout, not four).
    """
    window = _read_timeout()
    start = time.monotonic()
    for attempt in range(RETRY_ATTEMPTS):
        token.raise_if_cancelled()
        try:
            return read()
        except SliceCancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below
            out_of_time = window is not None and time.monotonic() - start >= window
            if attempt == RETRY_ATTEMPTS - 1 or out_of_time or not is_transient(exc):
                raise
            token.sleep(_backoff(attempt))
    raise AssertionError('unreachable')  # pragma: no cover


async def _retried(read: Callable[[], Any], window: float | None) -> Any:
    """``await read()`` on zarr's loop, retrying transient failures as :func:`with_retry` does;
    cancelling the task (the token's callback) cancels the wait between attempts too."""
    start = time.monotonic()
    for attempt in range(RETRY_ATTEMPTS):
        try:
            return await read()
        except Exception as exc:  # noqa: BLE001 - classified below
            out_of_time = window is not None and time.monotonic() - start >= window
            if attempt == RETRY_ATTEMPTS - 1 or out_of_time or not is_transient(exc):
                raise
            logger.debug('chunk read failed (attempt %d), retrying: %r', attempt + 1, exc)
            del exc  # its traceback holds this frame
            await asyncio.sleep(_backoff(attempt))
    raise AssertionError('unreachable')  # pragma: no cover


# --- reading each kind of array ------------------------------------------------------------


def _is_zarr_array(array: Any) -> bool:
    try:
        import zarr
    except ImportError:  # pragma: no cover
        return False
    return isinstance(array, zarr.Array)


def _is_dask_array(array: Any) -> bool:
    try:
        import dask.array as da
    except ImportError:  # pragma: no cover
        return False
    return isinstance(array, da.Array)


def zarr_under_dask(array: Any) -> Any:
    """The zarr array of ``da.from_zarr(z)`` as it came (no graph on top, the same chunks), read
    here rather than by dask; None for anything else, or with a distributed client bound."""
    if getattr(_local, 'dask_client', None) is not None or not _is_dask_array(array):
        return None
    try:
        layers = array.__dask_graph__().layers
        if len(layers) != 2 or array.name not in layers:
            return None
        (other,) = (layer for name, layer in layers.items() if name != array.name)
        values = list(other.values()) if len(other) == 1 else []
        source = values[0] if values else None
        if not _is_zarr_array(source) or source.shape != array.shape or source.dtype != array.dtype:
            return None
        import dask.array as da

        if da.core.normalize_chunks(source.chunks, source.shape) != array.chunks:
            return None
    except Exception:  # noqa: BLE001 - an unusual graph: dask reads it
        return None
    return source


def _read_zarr(array: Any, selection: tuple, token: CancelToken) -> np.ndarray:
    def read() -> np.ndarray:
        future = start_on_loop(_timed(array.async_array.getitem(selection), _read_timeout()))
        with token.on_cancel(future.cancel):
            try:
                return np.asarray(result_of(future))
            except concurrent.futures.CancelledError:
                raise SliceCancelled from None

    return with_retry(read, token)


def _dask_pretask(key: Any, dsk: Any, state: Any) -> None:
    current_token().raise_if_cancelled()


#: dask callback tuple (start, start_state, pretask, posttask, finish): stop issuing chunk tasks
#: once the calling thread's token is cancelled. Passed to each compute explicitly: dask's global
#: callbacks are swapped out (``Callback.active = set()``) while any compute runs, so a globally
#: registered callback misses computes that overlap another one.
_DASK_CANCEL_CALLBACKS = [(None, None, _dask_pretask, None, None)]


class _RegularGrid:
    def __init__(self, size: int, chunk: int) -> None:
        self.size, self.chunk = size, chunk

    def index(self, i: int) -> int:
        return i // self.chunk

    def span(self, ci: int) -> tuple[int, int]:
        return ci * self.chunk, min((ci + 1) * self.chunk, self.size)


class _IrregularGrid:
    def __init__(self, sizes: tuple[int, ...]) -> None:
        self.bounds = [0, *np.cumsum(sizes).tolist()]

    def index(self, i: int) -> int:
        return bisect.bisect_right(self.bounds, i) - 1

    def span(self, ci: int) -> tuple[int, int]:
        return self.bounds[ci], self.bounds[ci + 1]


class ChunkPlan:
    """How ``array[selection]`` (ints and positive-step slices) maps onto the array's chunks."""

    def __init__(self, shape: tuple[int, ...], grids: list, selection: tuple) -> None:
        selection = tuple(selection) + (slice(None),) * (len(shape) - len(selection))
        self.grids = grids
        self.out_shape: list[int] = []
        #: Per axis: [(chunk index, out index or None, index inside the chunk)].
        per_axis: list[list[tuple[int, slice | None, slice | int]]] = []
        for n, grid, sel in zip(shape, grids, selection, strict=True):
            if isinstance(sel, slice):
                r = range(*sel.indices(n))
                if r.step <= 0:
                    raise ValueError('negative steps are read directly')
                self.out_shape.append(len(r))
                ops = []
                if len(r):
                    for ci in range(grid.index(r[0]), grid.index(r[-1]) + 1):
                        c0, c1 = grid.span(ci)
                        lo = max(0, -(-(c0 - r.start) // r.step))
                        hi = min(len(r), -(-(c1 - r.start) // r.step))
                        if lo < hi:
                            ops.append(
                                (ci, slice(lo, hi), slice(r[lo] - c0, r[hi - 1] - c0 + 1, r.step))
                            )
                per_axis.append(ops)
            else:
                i = int(sel)
                i = i + n if i < 0 else i
                if not 0 <= i < n:
                    raise IndexError(f'index {sel} out of range for size {n}')
                ci = grid.index(i)
                per_axis.append([(ci, None, i - grid.span(ci)[0])])
        self.ops = [
            (
                tuple(op[0] for op in combo),
                tuple(op[1] for op in combo if op[1] is not None),
                tuple(op[2] for op in combo),
            )
            for combo in itertools.product(*per_axis)
        ]

    @property
    def chunks(self) -> list[tuple[int, ...]]:
        return [op[0] for op in self.ops]

    def region(self, chunk: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(slice(*g.span(ci)) for g, ci in zip(self.grids, chunk, strict=True))

    def assemble(self, chunks: dict, dtype: Any) -> np.ndarray:
        out = np.empty(self.out_shape, dtype=dtype)
        for chunk, out_index, in_index in self.ops:
            out[out_index] = chunks[chunk][in_index]
        return out


def _cached_chunks(
    cache: Any, source: Any, plan: ChunkPlan, send: Callable[[list], Any] | None = None
) -> tuple[dict[tuple[int, ...], np.ndarray], list[tuple[int, ...]]]:
    """Chunks of ``plan`` found in the cache, and the ones missing; counts hits and misses.

    Cache-only (:func:`bound_reading`), a miss raises :class:`NeedsIO` before anything is
    counted (the request is retried on a worker), after ``send(missing)`` where that is given.
    """
    wanted = list(dict.fromkeys(plan.chunks))
    if getattr(_local, 'cache_only', False) and not all((source, c) in cache for c in wanted):
        if send is not None:
            # Not those on their way already (a scrub's next plane, sent ahead): a look from
            # this thread at what zarr's loop is reading may be stale, and that is harmless:
            # a read sent twice is read once, one not sent is read by the worker.
            todo = [c for c in wanted if (source, c) not in cache and (source, c) not in cache.inflight]
            if todo:
                send(todo)
        raise NeedsIO
    found: dict[tuple[int, ...], np.ndarray] = {}
    missing: list[tuple[int, ...]] = []
    for chunk in wanted:
        value = cache.get((source, chunk))
        if value is None:
            missing.append(chunk)
        else:
            found[chunk] = value
    counters = getattr(_local, 'counters', None)
    if counters is not None:
        counters.hits += len(found)
        counters.misses += len(missing)
    if missing and getattr(_local, 'cache_only', False):
        raise NeedsIO  # evicted since the check above
    return found, missing


def _zarr_plan(array: Any, selection: tuple) -> ChunkPlan | None:
    try:
        chunks = array.chunks
        grids = [_RegularGrid(n, c) for n, c in zip(array.shape, chunks, strict=True)]
        if not grids:
            return None
        return ChunkPlan(array.shape, grids, selection)
    except (NotImplementedError, ValueError, TypeError):
        return None  # irregular chunk grids, negative steps, fancy indexing: read directly


#: Chunk requests one read keeps in flight. Remote reads are latency-bound: zarr's default of 10
#: turns the 16 chunks of a 1024² plane at 256² chunks into two round trips.
FETCH_CONCURRENCY = 32


def _read_zarr_chunks(array: Any, plan: ChunkPlan, token: CancelToken, cache: Any) -> np.ndarray:
    """Read ``plan`` chunk by chunk on zarr's loop, each chunk retried on its own (a chunk read
    is kept while another is retried); through ``cache`` if not None (else nothing is kept)."""
    import zarr

    source = cache.source_key(array) if cache is not None else None
    limit = max(FETCH_CONCURRENCY, int(zarr.config.get('async.concurrency') or 10))
    timeout = _read_timeout()

    async def read_chunk(chunk: tuple[int, ...]) -> np.ndarray:
        region = plan.region(chunk)
        data = await _retried(lambda: _timed(array.async_array.getitem(region), timeout), timeout)
        data = np.asarray(data)
        if cache is not None:
            cache.put((source, chunk), data)  # kept even if the reader is cancelled
        return data

    async def fetch(todo: list[tuple[int, ...]], into: dict) -> None:
        gate = asyncio.Semaphore(limit)

        async def one(chunk: tuple[int, ...]) -> None:
            async with gate:
                if cache is None:
                    into[chunk] = await read_chunk(chunk)
                else:
                    into[chunk] = await _shared_read(cache, (source, chunk), lambda: read_chunk(chunk))

        async with asyncio.TaskGroup() as group:
            for chunk in todo:
                group.create_task(one(chunk))

    def send(todo: list[tuple[int, ...]]) -> None:
        """The reads of ``todo`` go out now, for a worker's read of this plan to join."""
        token.add_callback(start_on_loop(fetch(todo, {})).cancel)
        _local.sent = True

    if cache is None:
        chunks: dict = {}
        missing = list(dict.fromkeys(plan.chunks))
    else:
        chunks, missing = _cached_chunks(
            cache, source, plan, send if getattr(_local, 'send_missing', False) else None
        )
    if cache is not None and getattr(_local, 'prefetch', False):
        raise Prefetched(
            start_on_loop(fetch(missing, {})) if missing else None
        )
    if missing:
        future = start_on_loop(fetch(missing, chunks))
        _issued()
        with token.on_cancel(future.cancel):
            try:
                result_of(future)
            except concurrent.futures.CancelledError:
                raise SliceCancelled from None
            except BaseExceptionGroup as group:  # the first chunk that failed
                raise group.exceptions[0] from None
    else:
        _issued()
    token.raise_if_cancelled()
    return plan.assemble(chunks, array.dtype)


#: How long :func:`let_sent_reads_out` gives zarr's event loop to issue the reads sent.
LET_OUT_S = 0.004


def let_sent_reads_out(timeout: float | None = None) -> bool:
    """Main thread, after a step: if this thread sent chunk reads (``send_missing``), wait until
    zarr's event loop has started them, at most ``timeout``; True if it had.

    Whatever the main thread does next (Qt repaints the window after a step) holds the GIL for
    10-15 ms at a time on a software-GL machine, and the loop needs the GIL to put the requests
    on the wire: without this they leave 20-40 ms after the step. Waiting here releases the GIL.
    """
    if not getattr(_local, 'sent', False):
        return False
    _local.sent = False
    timeout = LET_OUT_S if timeout is None else timeout
    if timeout <= 0:
        return False
    future = start_on_loop(_loop_quiet())  # after the reads and cancels: one wake-up for all
    try:
        result_of(future, timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        return False
    return True


async def _loop_quiet(max_turns: int = 32) -> None:
    """Return once nothing else on this loop is ready to run: the reads scheduled before it wait
    for the network (their requests are out). Without the loop's ready queue to look at, after
    a few passes (the loop runs ready callbacks first in, first out)."""
    loop = asyncio.get_running_loop()
    ready = getattr(loop, '_ready', None)
    for turn in range(max_turns):
        await asyncio.sleep(0)
        if ready is None and turn >= 7:
            return
        if ready is not None and not ready:
            return


async def _shared_read(cache: Any, key: tuple, start: Callable[[], Any]) -> np.ndarray:
    """Read a chunk once for everyone who wants it now (runs on zarr's event loop).

    The first reader of ``key`` starts the read as a task of its own; later readers of the same
    key (a visible request joining the prefetch of its plane, two layers over one array) await
    that task. A reader that is cancelled stops waiting; the read itself is cancelled only when
    nobody waits for it any more, so cancellation still stops I/O nobody needs.
    """
    inflight = cache.inflight  # changed only on this loop (no lock); other threads may look
    entry = inflight.get(key)
    if entry is None and key in cache:
        # Read by someone else since this reader looked in the cache (on its worker): a read
        # puts its chunk in the cache before it leaves ``inflight``, so one of the two holds it.
        cached = cache.get(key)
        if cached is not None:
            return cached
    if entry is None:
        task = asyncio.ensure_future(start())
        entry = inflight[key] = [task, 0]

        def done(_: asyncio.Future, entry: list = entry) -> None:
            if inflight.get(key) is entry:
                del inflight[key]

        task.add_done_callback(done)
    entry[1] += 1
    try:
        return await asyncio.shield(entry[0])
    finally:
        entry[1] -= 1
        if not entry[1] and not entry[0].done():
            if inflight.get(key) is entry:
                del inflight[key]  # a reader that comes now starts afresh
            entry[0].cancel()  # nobody wants it any more
        elif entry[0].done() and not entry[0].cancelled():
            entry[0].exception()  # retrieved: each reader raises it itself


def _local_dask_kwargs(collections: list) -> dict:
    import dask
    from dask import local, threaded

    scheduler = dask.base.get_scheduler(collections=collections)
    # Local schedulers run ``pretask`` in the thread driving the compute (this worker), where our
    # token is bound; other schedulers (e.g. distributed) do not take ``callbacks``.
    local_getters = {threaded.get, local.get_sync}
    try:
        from dask import multiprocessing

        local_getters.add(multiprocessing.get)
    except ImportError:  # pragma: no cover - needs cloudpickle
        pass
    return {'callbacks': _DASK_CANCEL_CALLBACKS} if scheduler in local_getters else {}


def _compute_dask(collections: list, token: CancelToken) -> list[np.ndarray]:
    """Compute dask collections cancellably: on the bound distributed client if any."""
    client = getattr(_local, 'dask_client', None)
    if client is not None:
        from distributed import CancelledError as DistributedCancelled

        def on_cluster() -> list[np.ndarray]:
            futures = client.compute(collections)
            with token.on_cancel(lambda: client.cancel(futures)):
                try:
                    return [np.asarray(r) for r in client.gather(futures)]
                except (DistributedCancelled, concurrent.futures.CancelledError):
                    raise SliceCancelled from None

        return with_retry(on_cluster, token)
    import dask

    kwargs = _local_dask_kwargs(collections)
    return with_retry(
        lambda: [np.asarray(r) for r in dask.compute(*collections, **kwargs)], token
    )


#: Cache dask blocks only when the blocks a selection touches hold at most this many times the
#: bytes it needs (computing whole blocks of a coarsely chunked graph to show one plane would
#: multiply the work); the rest is computed as sliced, uncached.
DASK_BLOCK_OVERREAD = 4


def _dask_plan(array: Any, selection: tuple, cache: Any) -> ChunkPlan | None:
    try:
        plan = ChunkPlan(array.shape, [_IrregularGrid(c) for c in array.chunks], selection)
    except (ValueError, TypeError):
        return None
    if not plan.chunks or any(np.isnan(n) for c in array.chunks for n in c):
        return None
    itemsize = np.dtype(array.dtype).itemsize
    needed = max(1, int(np.prod(plan.out_shape)) * itemsize)
    blocks = dict.fromkeys(plan.chunks)
    sizes = [
        int(np.prod([b - a for a, b in (g.span(ci) for g, ci in zip(plan.grids, chunk))])) * itemsize
        for chunk in blocks
    ]
    if sum(sizes) > DASK_BLOCK_OVERREAD * needed + max(sizes) or max(sizes) > cache.max_bytes // 4:
        return None
    return plan


def _read_dask_cached(array: Any, plan: ChunkPlan, token: CancelToken, cache: Any) -> np.ndarray:
    source = cache.source_key(array)
    chunks, missing = _cached_chunks(cache, source, plan)
    if missing:
        results = _compute_dask([array.blocks[chunk] for chunk in missing], token)
        for chunk, data in zip(missing, results, strict=True):
            chunks[chunk] = data
            cache.put((source, chunk), data)
    token.raise_if_cancelled()
    return plan.assemble(chunks, array.dtype)


def read(array: Any, selection: tuple, token: CancelToken | None = None) -> np.ndarray:
    """Read ``array[selection]`` as numpy, cancellably, with retries, through the bound cache.

    In a prefetch (``bound_reading(prefetch=True)``) raise :class:`Prefetched` instead.
    """
    data = _read(array, selection, token)
    if getattr(_local, 'prefetch', False):
        raise Prefetched  # read in place (not a cached zarr read): the chunks are cached now
    return data


def _read(array: Any, selection: tuple, token: CancelToken | None) -> np.ndarray:
    token = token or current_token()
    token.raise_if_cancelled()
    cache = _bound_cache()
    under = zarr_under_dask(array)
    if under is not None:
        array = under  # its chunks are ours to fetch (and retry) one by one
    is_zarr = _is_zarr_array(array)
    if is_zarr:
        plan = _zarr_plan(array, selection)
        if plan is not None and (cache is not None or not getattr(_local, 'cache_only', False)):
            return _read_zarr_chunks(array, plan, token, cache)  # tells when its I/O is out
    _issued()  # no finer signal elsewhere: the read starts now
    if is_zarr:
        if getattr(_local, 'cache_only', False):
            raise NeedsIO
        return _read_zarr(array, selection, token)
    if _is_dask_array(array):
        plan = _dask_plan(array, selection, cache) if cache is not None else None
        if plan is not None:
            return _read_dask_cached(array, plan, token, cache)
        if getattr(_local, 'cache_only', False):
            raise NeedsIO
        return _compute_dask([array[selection]], token)[0]
    if getattr(_local, 'cache_only', False):
        raise NeedsIO
    return with_retry(lambda: np.asarray(array[selection]), token)


# --- lazy indexing -------------------------------------------------------------------------


class LazySource:
    """An array-like that records indexing and reads only when materialised.

    napari's slice requests index their data (``data[slices]``), sometimes in two steps, then call
    ``np.asarray``. Wrapping the data in a ``LazySource`` keeps napari's slicing logic unchanged
    while routing the actual read through :func:`read`.
    """

    __slots__ = ('array', '_index')

    def __init__(self, array: Any, index: tuple[range | int, ...] | None = None) -> None:
        self.array = array
        self._index = (
            tuple(range(n) for n in array.shape) if index is None else index
        )

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(i) for i in self._index if isinstance(i, range))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

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
        for current in self._index:
            if isinstance(current, int):
                new.append(current)
                continue
            k = next(keys)
            if isinstance(k, slice):
                new.append(current[k])
            elif isinstance(k, int | np.integer):
                new.append(current[int(k)])
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

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = read(self.array, self.selection())
        return data if dtype is None else data.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f'LazySource({type(self.array).__name__}, selection={self.selection()})'
