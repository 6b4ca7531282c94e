"""tensorstore as a read engine for zarr arrays, behind the read queue (issue 25).

- :class:`TensorstoreSource` is the :class:`ChunkSource` of a zarr array whose store maps to a
  tensorstore spec (:mod:`._tensorstore_spec`): each chunk the read queue asks for is a future
  of zarr's asyncio loop (:meth:`TensorstoreEngine.read`; cancelling it gives the read up). The
  chunks of one request that the queue starts in one turn of the loop (a plane's) are one
  tensorstore read of the box they make (:class:`_Group`), each chunk a view of its array: the
  plane is that array (``ChunkPlan.assemble`` copies nothing) and tensorstore calls into
  Python once for it. Other chunk reads started in one turn (prefetch without a request, a
  retry) are one tensorstore read each, handed over together (:class:`_Turn`).
  The queue does the rest, as for :class:`ZarrSource`: which chunks go out first and how many
  (``MAX_IN_FLIGHT``), sharing, per-chunk retries within ``read_timeout``, the chunk cache, and
  progress (a request counts its chunks as they come).
- :class:`TensorstoreEngine`: one ``tensorstore.Context`` per slicer (put in the read queue's
  :class:`Env`, closed at the slicer's shutdown), and the arrays it opened, per zarr array.

Why the queue must stay ours (measured with tensorstore 0.1.86): a tensorstore future's
``cancel()`` does not stop requests tensorstore has queued itself (the http kvstore hands every
request to its ``http_request_concurrency`` executor at once, and one queued there is sent after
its future was cancelled). So tensorstore is given more HTTP slots (``HTTP_CONCURRENCY``) than the
queue has reads in flight: it never queues, and a chunk the queue has not started is never
requested. A request already on the wire when its read is cancelled runs to its end (or to curl's
low-speed timeout, see ``_bound_stalled_requests``); its result is dropped, and a new read of the
same chunk meanwhile joins it rather than sending another.

Retries: tensorstore makes one attempt per request (``*_request_retries.max_retries = 0``; in
0.1.86 ``max_retries`` counts the retries after the first attempt) and the queue retries each
chunk (``_retry.retried``). Its own retry loop sleeps in its request threads without looking at
cancellation, so it would keep retrying a read nobody wants.

Errors are raised as :class:`TensorstoreReadError` (an ``OSError``) with ``code`` (the absl status
name) and ``status`` (the HTTP status, if tensorstore reports one), subclassing ``TimeoutError`` /
``ConnectionError`` / ``FileNotFoundError`` / ``PermissionError`` where that is what happened, so
``_retry.is_transient`` classifies them as it does zarr's. A 404 on a chunk key is a missing chunk
(the fill value), in tensorstore as in zarr-python: neither an error nor retried.

Fallbacks, all silent and to zarr-python (:class:`ZarrSource`): a store that does not map, an
array tensorstore fails to open (or sees with another shape or dtype), tensorstore not installed,
a forked child (tensorstore's threads do not survive ``fork``), a closed engine. Selections that
are not split into chunks (``read_whole``) are read by zarr-python too.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import os
import re
import threading
import weakref
from typing import Any

import numpy as np

from napari_async_slicing._reading._queue import MAX_IN_FLIGHT
from napari_async_slicing._reading._retry import is_transient
from napari_async_slicing._reading._sources import Env, ReadTogether, ZarrSource
from napari_async_slicing._reading._tensorstore_spec import spec_for, zarr_array_of
from napari_async_slicing._reading._token import CancelToken

logger = logging.getLogger(__name__)

#: What ``read_engine='auto'`` picks where tensorstore is installed: tensorstore, which won the
#: engines' A/B (docs/bench/read-engines.md; what it does not meet: the design doc's "Not yet").
AUTO_USES_TENSORSTORE = True

#: tensorstore's own HTTP request limit: above the read queue's reads in flight, so that it never
#: queues a request a cancel could not take back, with room for requests still on the wire after
#: their reads were cancelled or timed out.
HTTP_CONCURRENCY = 2 * MAX_IN_FLIGHT
#: Blocking file reads in flight (``file`` kvstore).
FILE_IO_CONCURRENCY = 4


def _ts() -> Any:
    import tensorstore

    return tensorstore


def available() -> bool:
    """Whether tensorstore can be imported here."""
    try:
        _ts()
    except ImportError:
        return False
    return True


def uses_tensorstore(read_engine: str) -> bool:
    """Whether the option ``read_engine`` reads zarr arrays with tensorstore here."""
    wanted = read_engine == 'tensorstore' or (read_engine == 'auto' and AUTO_USES_TENSORSTORE)
    return wanted and available()


def engine_for(read_engine: str, read_timeout: float | None) -> TensorstoreEngine | None:
    """The engine a slicer with option ``read_engine`` reads with; None: zarr-python."""
    if uses_tensorstore(read_engine):
        return TensorstoreEngine(read_timeout)
    if read_engine == 'tensorstore':
        logger.warning(
            "read_engine='tensorstore' but tensorstore is not installed "
            '(pip install "napari-async-slicing[tensorstore]"): reading with zarr-python'
        )
    return None


# --- errors ------------------------------------------------------------------------------------


class TensorstoreReadError(OSError):
    """A tensorstore read or open failed. ``code``: tensorstore's status code name (``"ABORTED"``,
    ``"NOT_FOUND"``...); ``status``: the HTTP status it reports, if any."""

    def __init__(self, message: str, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''


class TensorstoreTimeout(TensorstoreReadError, TimeoutError):
    """DEADLINE_EXCEEDED, or curl's timeout (a stalled connection)."""


class TensorstoreUnavailable(TensorstoreReadError, ConnectionError):
    """UNAVAILABLE without an HTTP status: the connection failed."""


class TensorstoreNotFound(TensorstoreReadError, FileNotFoundError):
    """NOT_FOUND: the array's metadata is missing (a missing chunk is its fill value)."""


class TensorstorePermissionDenied(TensorstoreReadError, PermissionError):
    """PERMISSION_DENIED / UNAUTHENTICATED (HTTP 401, 403)."""


_CODE = re.compile(r'^([A-Z_]+): ')
_HTTP_STATUS = re.compile(r'\[HTTP code (\d{3})\]')
_CURL_CODE = re.compile(r"\[curl_code='(\d+)'\]")
#: curl's CURLE_OPERATION_TIMEDOUT.
_CURL_TIMEOUT = 28


def translate_error(exc: BaseException) -> BaseException:
    """The exception to raise for a tensorstore failure ``exc`` (others are returned as they are).

    tensorstore raises ``ValueError("CODE: message")``; the HTTP status is in the message as
    ``[HTTP code N]`` and curl's error as ``[curl_code='N']``.
    """
    if not isinstance(exc, ValueError) or isinstance(exc, TensorstoreReadError):
        return exc
    message = str(exc)
    match = _CODE.match(message)
    if match is None:
        return exc
    code = match.group(1)
    found = _HTTP_STATUS.findall(message)
    status = int(found[-1]) if found else None
    curl = _CURL_CODE.findall(message)
    cls: type[TensorstoreReadError] = TensorstoreReadError  # with ``status`` (5xx: transient) or not
    if status in (401, 403) or code in ('PERMISSION_DENIED', 'UNAUTHENTICATED'):
        cls = TensorstorePermissionDenied
    elif status in (404, 410) or (status is None and code == 'NOT_FOUND'):
        cls = TensorstoreNotFound
    elif status is None and (code == 'DEADLINE_EXCEEDED' or (curl and int(curl[-1]) == _CURL_TIMEOUT)):
        cls = TensorstoreTimeout
    elif status is None and (code == 'UNAVAILABLE' or curl):
        cls = TensorstoreUnavailable
    return cls(message, code, status)


async def awaited(future: Any) -> Any:
    """Await a tensorstore future on the running loop; its errors translated."""
    try:
        return await future
    except ValueError as exc:
        error = translate_error(exc)
        if error is exc:
            raise
        raise error from None


# --- the engine --------------------------------------------------------------------------------


def _bound_stalled_requests(read_timeout: float | None) -> None:
    """Make curl drop a connection that sends nothing for about half of ``read_timeout``.

    tensorstore's http kvstore sets no request timeout; curl gives up on a transfer slower than a
    byte a second for ``TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS`` (default 120 s), and that is the
    only end of a stalled request: cancelling its read leaves it on the wire. It matters beyond
    the connection it holds: tensorstore joins a new read of a chunk to the request still on the
    wire for it, so a retry (or a revisit) of a stalled chunk waits for that request to end; at
    half the window, a stalled chunk gets a fresh request within it. The price: a server whose
    first byte takes longer than that fails where zarr-python would wait up to ``read_timeout``.
    Read once per process, when tensorstore's HTTP transport is first made: an engine made
    later, or a value the user set, leaves it as it is.
    """
    if read_timeout is not None:
        seconds = max(1, math.ceil(read_timeout / 2))
        os.environ.setdefault('TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS', str(seconds))


def context_spec() -> dict[str, Any]:
    """The tensorstore context of an engine."""
    one_attempt = {'max_retries': 0, 'initial_delay': '1ms', 'max_delay': '1ms'}
    requests = {'limit': HTTP_CONCURRENCY}
    return {
        # Nothing kept by tensorstore: our ChunkCache keeps the decoded chunks, so the user's
        # ``cache_bytes`` bounds both caches together (tensorstore's would hold a second copy of
        # what ours holds). A sharded array's shard index is then read again for each chunk, as
        # zarr-python does.
        'cache_pool': {'total_bytes_limit': 0},
        'data_copy_concurrency': {'limit': max(1, os.cpu_count() or 1)},
        'file_io_concurrency': {'limit': FILE_IO_CONCURRENCY},
        'http_request_concurrency': requests,
        'http_request_retries': one_attempt,
        's3_request_concurrency': requests,
        's3_request_retries': one_attempt,
        'gcs_request_concurrency': requests,
        'gcs_request_retries': one_attempt,
    }


_MISSING = object()
#: The longest a finished chunk read waits for the read its turn waits on (``_Turn.sweep``).
SWEEP_S = 0.05


class TensorstoreEngine:
    """One tensorstore context for one slicer, and what it knows of the zarr arrays it reads.

    ``read_timeout`` (seconds, None: none) bounds opening an array; the read queue bounds each
    chunk read. Per zarr array (weakly, by identity): its spec (None: zarr-python reads it) and,
    on zarr's loop, the tensorstore it opened.
    """

    def __init__(self, read_timeout: float | None = None) -> None:
        self.read_timeout = read_timeout or None
        self._pid = os.getpid()
        _bound_stalled_requests(self.read_timeout)
        self.context_spec = context_spec()
        self._context: Any = _ts().Context(self.context_spec)
        self._lock = threading.Lock()
        #: id(zarr array) -> its spec, or None: zarr-python reads it (any thread).
        self._specs: dict[int, dict[str, Any] | None] = {}
        #: id(zarr array) -> its tensorstore, None (zarr-python reads it) or the task opening it
        #: (zarr's loop only).
        self._stores: dict[int, Any] = {}
        self._closed = False
        #: Chunk reads started in this turn of zarr's loop, settled together (zarr's loop only).
        self._turn: _Turn | None = None
        #: Chunk reads of one request started in this turn, read as one (zarr's loop only).
        self._groups: dict[tuple[int, int], _Group] = {}
        #: Chunks read by tensorstore, and by zarr-python for arrays tensorstore could not open.
        self.counts = {'tensorstore_chunks': 0, 'zarr_chunks': 0}

    @property
    def forked(self) -> bool:
        """Whether this is a forked child of the process that made the engine."""
        return os.getpid() != self._pid

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict[str, int]:
        """Arrays known (mapped to a spec or not, opened in tensorstore) and chunks read."""
        with self._lock:
            specs = list(self._specs.values())
            stores = list(self._stores.values())
        return {
            'arrays': len(specs),
            'unmapped': sum(spec is None for spec in specs),
            'opened': sum(store is not None and not isinstance(store, asyncio.Task) for store in stores),
            **self.counts,
        }

    def close(self) -> None:
        """Forget the arrays and the context (reads in flight end as they would)."""
        with self._lock:
            self._closed = True
            self._specs.clear()
            self._stores.clear()
            self._context = None

    def source(self, array: Any) -> TensorstoreSource | None:
        """The source reading ``array`` (a zarr array) with tensorstore; None: zarr-python does.
        Cheap (the spec is worked out once per array), so callable on any thread."""
        if self._closed or self.forked:
            return None
        key = id(array)
        with self._lock:
            known = key in self._specs
            spec = self._specs.get(key)
        if not known:
            mapped = spec_for(array)
            with self._lock:
                if self._closed:
                    return None
                if key not in self._specs:
                    self._specs[key] = mapped
                    weakref.finalize(array, self._forget, key)
                spec = self._specs[key]
        return None if spec is None else TensorstoreSource(array, self, spec)

    def _forget(self, key: int) -> None:
        with self._lock:
            self._specs.pop(key, None)
            self._stores.pop(key, None)

    async def store_for(self, source: TensorstoreSource) -> Any:
        """On zarr's loop: ``source``'s array opened in tensorstore, or None (zarr-python reads
        it). Opened once per array; every chunk read waits for the same open."""
        if self._closed or self.forked:
            return None
        key = id(source.array)
        state = self._stores.get(key, _MISSING)
        if state is _MISSING:
            opening = asyncio.get_running_loop().create_task(self._open(key, source.array, source.spec))
            self._stores[key] = state = opening
        if isinstance(state, asyncio.Task):
            # Shielded: a chunk read cancelled or timed out does not stop the open others wait for.
            return await asyncio.shield(state)
        return state

    def read(
        self, store: Any, region: tuple[slice, ...], together: ReadTogether | None = None
    ) -> asyncio.Future:
        """On zarr's loop: a future of ``store[region]``, read by tensorstore now (its errors
        translated); cancelling the future cancels the read.

        Each call from tensorstore's threads into Python takes the GIL there, and waits for it
        while the main thread is busy (holding up that thread's other work), where a plane
        needs all of its chunks anyway. So the chunk reads of one request (``together``)
        started in one turn of the loop are one tensorstore read where they make one box
        (:class:`_Group`: one call into Python), each chunk a view of its array. The others
        started in that turn are handed over together (:class:`_Turn`): one unfinished read at
        a time is waited on, and every finished one is taken when it finishes.
        """
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if self._turn is None:
            self._turn = _Turn(loop)
            # An empty context: the callback holds nothing of the request that started the turn.
            loop.call_soon(self._end_turn, context=contextvars.Context())
        if together is not None and not together.split:
            key = (id(together), id(store))
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = _Group(loop, store, together)
            group.reads.append((region, future))
        else:
            self._turn.add(store, region, future)
        return future

    def _end_turn(self) -> None:
        turn, self._turn = self._turn, None
        groups, self._groups = self._groups, {}
        for group in groups.values():
            if not group.start() and turn is not None:
                for region, future in group.reads:  # not one box: read one by one
                    if not future.done():
                        turn.add(group.store, region, future)
        if turn is not None:
            turn.sweep()

    async def _open(self, key: int, zarr_array: Any, spec: dict[str, Any]) -> Any:
        ts = _ts()
        # What was read once is used as it is (zarr-python does not revalidate either).
        spec = {**spec, 'recheck_cached_data': 'open', 'recheck_cached_metadata': 'open'}
        store: Any = None
        try:
            future = ts.open(spec, context=self._context, read=True, open=True)
            store = await asyncio.wait_for(awaited(future), self.read_timeout)
            if tuple(store.shape) != tuple(zarr_array.shape) or store.dtype.numpy_dtype != zarr_array.dtype:
                logger.debug(
                    'tensorstore sees %s %s, zarr %s %s',
                    store.shape,
                    store.dtype,
                    zarr_array.shape,
                    zarr_array.dtype,
                )
                store = None
        except Exception as exc:  # noqa: BLE001 - zarr-python reads it
            error = translate_error(exc)
            logger.debug('tensorstore could not open %r; zarr-python reads it: %r', zarr_array, error)
            if is_transient(error):  # a timeout, a 5xx: the next read tries again
                if self._stores.get(key) is asyncio.current_task():
                    del self._stores[key]
                return None
        with self._lock:
            if self._closed or key not in self._specs:
                return None
            self._stores[key] = store
            if store is None:
                self._specs[key] = None  # from now on zarr-python's source reads it
        return store


class _Group:
    """The chunk reads of one request started in one turn of zarr's loop, read by tensorstore
    as one read of the box they make; each reader's future gets its chunk as a view of that
    read's array. The read is cancelled when every reader gave up; if it fails, each reader gets
    its error and the request's later reads go one by one (``ReadTogether.split``): a retry
    reads only the chunk that failed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, store: Any, together: ReadTogether) -> None:
        self.loop = loop
        self.store = store
        self.together = together
        #: (the chunk's region, its reader's future).
        self.reads: list[tuple[tuple[slice, ...], asyncio.Future]] = []
        self._read: Any = None
        self._box: tuple[slice, ...] = ()
        #: Readers that have not cancelled their future.
        self._wanted = 0

    def start(self) -> bool:
        """Start the read of the box; False (nothing started) if the reads are not one box."""
        reads = [(region, f) for region, f in self.reads if not f.done()]
        if len(reads) < 2:
            return False
        regions = [region for region, _ in reads]
        box = tuple(
            slice(min(r.start for r in axis), max(r.stop for r in axis))
            for axis in zip(*regions, strict=True)
        )
        size = math.prod(s.stop - s.start for s in box)
        if sum(math.prod(s.stop - s.start for s in region) for region in regions) != size:
            return False  # not a box (the chunks of one plan never overlap)
        self.reads, self._box, self._wanted = reads, box, len(reads)
        self._read = self.store[box].read()
        for _, future in reads:
            future.add_done_callback(self._given_up)
        self._read.add_done_callback(self._finished)
        return True

    def _given_up(self, future: asyncio.Future) -> None:
        """A reader's future is done: the read is cancelled once every one was cancelled
        (counted: a volume's group may hold thousands of chunks)."""
        if future.cancelled():
            self._wanted -= 1
            if not self._wanted:
                self._read.cancel()

    def _finished(self, read: Any) -> None:
        """On tensorstore's thread (the one call into Python of the read)."""
        try:
            self.loop.call_soon_threadsafe(self._settle, context=contextvars.Context())
        except RuntimeError:  # the loop was closed
            pass

    def _settle(self) -> None:
        try:
            value = self._read.result()  # finished: returns at once
        except asyncio.CancelledError:
            for _, future in self.reads:
                future.cancel()
            return
        except Exception as exc:  # noqa: BLE001 - each reader raises it
            self.together.split = True
            for _, future in self.reads:
                if not future.done():
                    future.set_exception(translate_error(exc))  # one each: each reader raises it
            return
        for region, future in self.reads:
            if not future.done():
                at = tuple(
                    slice(r.start - b.start, r.stop - b.start) for r, b in zip(region, self._box, strict=True)
                )
                future.set_result(value[at])


class _Turn:
    """The tensorstore reads started in one turn of zarr's loop, handed to their futures as they
    finish (see :meth:`TensorstoreEngine.read`). Loop callbacks, not a task: a task would add
    turns of the loop between a read finishing and its reader resuming, and each turn of the
    loop gives the GIL up (its ``select``) and may wait a switch interval for it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reads: list[tuple[Any, asyncio.Future]] = []
        self._waited: Any = None
        self._timer: asyncio.TimerHandle | None = None

    def add(self, store: Any, region: tuple[slice, ...], future: asyncio.Future) -> None:
        """Read ``store[region]`` now, for ``future`` (cancelling it cancels the read)."""
        read = store[region].read()
        future.add_done_callback(lambda f: read.cancel() if f.cancelled() else None)
        self.reads.append((read, future))

    def sweep(self) -> None:
        """Hand over every finished read; wait on the first unfinished one, at most ``SWEEP_S``
        (a stalled read does not hold back the others)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        left = []
        for read, future in self.reads:
            if future.done():  # cancelled by its reader: the read was cancelled with it
                continue
            if not read.done():
                left.append((read, future))
                continue
            try:
                future.set_result(read.result())  # finished: returns at once, GIL held
            except asyncio.CancelledError:
                future.cancel()
            except Exception as exc:  # noqa: BLE001 - its reader raises it
                future.set_exception(translate_error(exc))
        self.reads = left
        if not left:
            return
        if left[0][0] is not self._waited:
            self._waited = left[0][0]
            self._waited.add_done_callback(self._finished)
        self._timer = self.loop.call_later(SWEEP_S, self.sweep)

    def _finished(self, read: Any) -> None:
        """On tensorstore's thread: a read waited on finished."""
        if read is not self._waited:
            return
        try:
            self.loop.call_soon_threadsafe(self.sweep)
        except RuntimeError:  # the loop was closed
            pass


class TensorstoreSource(ZarrSource):
    """A zarr array read by tensorstore (a request's chunks as one read); see the module docstring.

    It plans as :class:`ZarrSource` (zarr's chunk grid: a sharded array's inner chunks, which
    are tensorstore's read chunks too) and caches under the same key, so chunks read by either
    engine are shared. Where tensorstore cannot open the array it reads with zarr-python.
    """

    reads_together = True

    def __init__(self, array: Any, engine: TensorstoreEngine, spec: dict[str, Any]) -> None:
        super().__init__(array)
        self.engine = engine
        self.spec = spec

    async def read_chunk(
        self, chunk: tuple[int, ...], region: tuple[slice, ...], env: Env, token: CancelToken
    ) -> np.ndarray:
        return await self.read_chunk_of(None, chunk, region, env, token)

    async def read_chunk_of(
        self,
        together: ReadTogether | None,
        chunk: tuple[int, ...],
        region: tuple[slice, ...],
        env: Env,
        token: CancelToken,
    ) -> np.ndarray:
        store = await self.engine.store_for(self)
        if store is None:
            self.engine.counts['zarr_chunks'] += 1
            return await super().read_chunk(chunk, region, env, token)
        self.engine.counts['tensorstore_chunks'] += 1
        return np.asarray(await self.engine.read(store, region, together))


__all__ = [
    'AUTO_USES_TENSORSTORE',
    'TensorstoreEngine',
    'TensorstoreReadError',
    'TensorstoreSource',
    'available',
    'engine_for',
    'spec_for',
    'translate_error',
    'uses_tensorstore',
    'zarr_array_of',
]
