"""One queue for every chunk read of a slicer, in the spirit of neuroglancer's chunk manager.

Each chunk wanted by anyone is one entry, keyed like the chunk cache, with the *interests* of
those who want it: a request's read (its tier and priority while it waits), or a standing want
(:meth:`ReadQueue.want`: the prefetcher's planes, the reads predicted for a step). An entry ranks
by its most urgent interest: :class:`Tier` first, then priority (lower first). A fixed number of
reads is in flight; the most urgent entries start first, and a visible read that finds every slot
taken aborts the least urgent background read and requeues it. An entry nobody wants any more is
dropped (queued) or cancelled (in flight: its HTTP request closes). A chunk read once is shared
by everyone who wants it then, and kept in the cache.

Everything here runs on the IO loop; other threads call in through ``_loop.call_on_loop``.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import logging
import time
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np

from napari_async_slicing._reading._plan import owner
from napari_async_slicing._reading._retry import retried
from napari_async_slicing._reading._sources import ChunkSource, Env, ReadTogether
from napari_async_slicing._reading._token import CancelToken, SliceCancelled, without_traceback

logger = logging.getLogger(__name__)


class Tier(IntEnum):
    """How urgent a read is (lower first)."""

    #: What the canvas shows now: a request's reads, and the reads predicted for a step.
    VISIBLE = 0
    #: Coarse first looks of planes near the shown one (the coarse window read at rest).
    PREVIEW = 1
    #: Planes the user is likely to ask for next (neighbours at rest, a steady scrub's next).
    PREFETCH = 2


#: Reads in flight at once, all tiers together.
MAX_IN_FLIGHT = 64
#: Of which at most this many preview reads.
MAX_PREVIEW_IN_FLIGHT = 32
#: A chunk whose read failed fails again for whoever asks this soon after (not read again: the
#: request the step predicted and the request itself ask for the same chunks).
FAILED_MEMORY_S = 1.0
#: How long reads just started are given to go out before less urgent ones start.
LET_OUT_S = 0.004


@dataclass(frozen=True)
class ChunkRead:
    """One chunk to read: its cache key and where it comes from."""

    key: tuple  # (source's cache key, chunk index)
    source: ChunkSource
    chunk: tuple[int, ...]
    region: tuple[slice, ...]
    #: The request's chunk reads this one belongs to, where its source reads them together.
    together: ReadTogether | None = field(default=None, compare=False, repr=False)


_NO_RANK = (len(Tier), 0.0)


class _Entry:
    __slots__ = ('future', 'interests', 'rank', 'read', 'requeue', 'task', 'token')

    def __init__(self, read: ChunkRead, loop: asyncio.AbstractEventLoop) -> None:
        self.read = read
        self.interests: dict[Hashable, tuple[int, float]] = {}
        self.future: asyncio.Future = loop.create_future()
        self.future.add_done_callback(_retrieve)
        self.task: asyncio.Task | None = None
        self.token = CancelToken()  # stops a blocking read (dask) when the entry is cancelled
        self.requeue = False
        #: The most urgent interest while the entry is live (queued or reading), else ``_NO_RANK``.
        self.rank: tuple[int, float] = _NO_RANK

    @property
    def background(self) -> bool:
        """Live, and wanted by nobody who shows it now (a preview or prefetch read)."""
        return self.rank[0] in (Tier.PREVIEW, Tier.PREFETCH)


class _Settled:
    """What a finished entry keeps instead of its future (the data went to its readers)."""

    @staticmethod
    def done() -> bool:
        return True

    @staticmethod
    def cancel() -> bool:
        return False


_SETTLED: Any = _Settled()


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # each waiter raises it itself; nobody waiting is not an error


class ReadQueue:
    """See the module docstring. ``cache`` may be disabled (then reads are shared, not kept)."""

    def __init__(
        self,
        cache: Any,
        *,
        read_timeout: float | None = None,
        env: Env | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.cache = cache if cache is not None and cache.enabled else None
        self.read_timeout = read_timeout or None
        self.env = env or Env()
        self.max_in_flight = max_in_flight
        self._entries: dict[tuple, _Entry] = {}
        self._heap: list[tuple[tuple[int, float], int, _Entry]] = []
        self._running: set[_Entry] = set()
        self._wants: dict[Hashable, dict[tuple, tuple[int, float]]] = {}
        #: Chunks whose read failed lately: key -> (when, the error).
        self._failed: dict[tuple, tuple[float, BaseException]] = {}
        self._seq = itertools.count()
        self._closed = False
        #: While reads just started go out, nothing less urgent starts (``_pump``).
        self._letting_out: asyncio.Task | None = None
        #: Background reads (previews, prefetch): started, read, cancelled before they were read.
        self.counts = {'started': 0, 'done': 0, 'cancelled': 0}
        #: Background (preview, prefetch) entries queued or reading; other threads may read it.
        self.background = 0

    # --- requests' reads ---------------------------------------------------------------------

    async def fetch(
        self, reads: Iterable[ChunkRead], tier: int = Tier.VISIBLE, priority: float = 0.0
    ) -> dict[tuple[int, ...], np.ndarray]:
        """Read ``reads`` (chunks not cached when they were looked up); cancelling the awaiting
        task gives up this reader's interest. Raises the first chunk's failure."""
        owner = object()
        out: dict[tuple[int, ...], np.ndarray] = {}
        entries: list[_Entry] = []
        try:
            for read in reads:
                cached = self.cache.peek(read.key) if self.cache is not None else None
                if cached is not None:  # read by someone else since it was looked up
                    out[read.chunk] = cached
                    continue
                failed = self._recent_failure(read.key)
                if failed is not None:
                    raise failed
                entry = self._entry(read)
                self._interest(entry, owner, (tier, priority))
                entries.append(entry)
            self._pump()
            futures = [(entry.read.chunk, entry.future) for entry in entries]
            if futures:
                await asyncio.wait([f for _, f in futures], return_when=asyncio.FIRST_EXCEPTION)
            for _, future in futures:
                if future.cancelled():
                    raise SliceCancelled
                error = future.exception() if future.done() else None
                if error is not None:
                    raise error
            for chunk, future in futures:
                out[chunk] = future.result()
            return out
        except BaseException:
            out.clear()  # this frame may outlive the read in a cycle: not its chunks
            raise
        finally:
            for entry in entries:
                self._lose(entry, owner)
            self._pump()

    async def read_whole(self, source: ChunkSource, selection: tuple, token: CancelToken) -> np.ndarray:
        """A read that is not split into chunks (nothing to share or keep), retried as one."""
        read = retried(lambda: source.read_whole(selection, self.env, token), self.read_timeout)
        return await _detached(read)

    # --- standing wants ----------------------------------------------------------------------

    def want(self, owner: Hashable, reads: Iterable[tuple[ChunkRead, int, float]]) -> None:
        """``owner`` now wants exactly ``reads`` ((read, tier, priority)); what it wanted before
        and does not want now is given up (dropped, or cancelled if nobody else wants it)."""
        if self._closed:
            return
        new: dict[tuple, tuple[int, float]] = {}
        for read, tier, priority in reads:
            if read.key in new or (self.cache is not None and read.key in self.cache):
                continue
            if self._recent_failure(read.key) is not None:
                continue
            new[read.key] = (tier, priority)
            self._interest(self._entry(read), owner, (tier, priority))
        for key in self._wants.get(owner, {}).keys() - new.keys():
            entry = self._entries.get(key)
            if entry is not None:
                self._lose(entry, owner)
        if new:
            self._wants[owner] = new
        else:
            self._wants.pop(owner, None)
        self._pump()

    def close(self) -> None:
        """Give up everything: queued reads are dropped, reads in flight cancelled."""
        self._closed = True
        self._wants.clear()
        if self._letting_out is not None:
            self._letting_out.cancel()
        for entry in list(self._entries.values()):
            entry.interests.clear()
            self._cancel(entry)
        self._heap.clear()

    # --- entries -----------------------------------------------------------------------------

    def _entry(self, read: ChunkRead) -> _Entry:
        entry = self._entries.get(read.key)
        if entry is None:
            entry = self._entries[read.key] = _Entry(read, asyncio.get_running_loop())
        return entry

    def _interest(self, entry: _Entry, owner: Hashable, rank: tuple[int, float]) -> None:
        entry.interests[owner] = rank
        self._rerank(entry)

    def _lose(self, entry: _Entry, owner: Hashable) -> None:
        if entry.interests.pop(owner, None) is None:
            return
        if entry.interests:
            self._rerank(entry)
        else:
            self._cancel(entry)

    def _set_rank(self, entry: _Entry, rank: tuple[int, float]) -> None:
        """Every change of an entry's rank goes here (it keeps ``background`` counted)."""
        self.background -= entry.background
        entry.rank = rank
        self.background += entry.background

    def _rerank(self, entry: _Entry) -> None:
        rank = min(entry.interests.values())
        if rank == entry.rank or entry.future.done():
            return
        self._set_rank(entry, rank)
        if entry.task is None:  # queued: (re)ordered; the stale heap item is skipped
            heapq.heappush(self._heap, (rank, next(self._seq), entry))

    def _cancel(self, entry: _Entry) -> None:
        """Nobody wants ``entry`` any more: drop it (queued) or cancel its read (in flight)."""
        if entry.background:
            self.counts['cancelled'] += 1
        self._set_rank(entry, _NO_RANK)
        entry.token.cancel()
        if self._entries.get(entry.read.key) is entry:
            del self._entries[entry.read.key]  # whoever wants the chunk now starts afresh
        if entry.task is not None:
            entry.task.cancel()  # its read ends (its HTTP request closes)
        elif not entry.future.done():
            entry.future.cancel()

    # --- running -----------------------------------------------------------------------------

    def _pump(self) -> None:
        """Start the most urgent queued reads while there are slots (background ones within
        their limits: previews up to ``MAX_PREVIEW_IN_FLIGHT``, prefetch one plane at a time).

        Reads of one rank go out before any less urgent read starts: a less urgent one waits
        until the loop has nothing else to run (the started requests wait on the network).
        Sent first is answered first: a coarse first look is not answered after the plane.
        """
        if self._letting_out is not None:
            return
        if len(self._heap) > 2 * len(self._entries) + 64:
            self._compact()
        started = None
        while self._heap:
            rank, _, entry = self._heap[0]
            if entry.task is not None or entry.future.done() or entry.rank != rank:
                heapq.heappop(self._heap)  # started, done, re-ranked or given up since
                continue
            if started is not None and rank != started:
                self._letting_out = _detached(self._after_out())
                return
            if len(self._running) >= self.max_in_flight:
                if rank[0] == Tier.VISIBLE and self._preempt():
                    continue
                return
            if rank[0] != Tier.VISIBLE and not self._background_slot(rank):
                return  # the heap is ordered: everything after it is background too
            heapq.heappop(self._heap)
            self._start(entry)
            started = rank

    def _recent_failure(self, key: tuple) -> BaseException | None:
        now = time.monotonic()
        for old in [k for k, (at, _) in self._failed.items() if now - at > FAILED_MEMORY_S]:
            del self._failed[old]
        failed = self._failed.get(key)
        return None if failed is None else failed[1]

    def _compact(self) -> None:
        """Drop heap items of entries started, done, re-ranked or given up (they would hold
        their entries, and a done entry's data, until they reached the top)."""
        self._heap = [
            item
            for item in self._heap
            if item[2].task is None and not item[2].future.done() and item[2].rank == item[0]
        ]
        heapq.heapify(self._heap)

    async def _after_out(self) -> None:
        """Let the reads just started go out, then start the next ones."""
        try:
            await _loop_quiet()
            # One wait on the network (the GIL free): whoever answers them sees them first.
            await asyncio.sleep(LET_OUT_S)
        finally:
            self._letting_out = None
        if not self._closed:
            self._pump()

    def _background_slot(self, rank: tuple[int, float]) -> bool:
        running = [e.rank for e in self._running if e.background]
        if rank[0] == Tier.PREVIEW:
            return sum(r[0] == Tier.PREVIEW for r in running) < MAX_PREVIEW_IN_FLIGHT
        # Prefetch: one plane (one priority) at a time, so it never floods the source.
        return all(r == rank for r in running if r[0] == Tier.PREFETCH)

    def _preempt(self) -> bool:
        """Abort the least urgent background read in flight, to requeue it; False if none."""
        background = [e for e in self._running if e.background and not e.requeue]
        if not background:
            return False
        victim = max(background, key=lambda e: e.rank)
        victim.requeue = True
        if victim.task is not None:
            victim.task.cancel()
        self._running.discard(victim)  # its slot is free now; ``_run`` requeues it
        return True

    def _start(self, entry: _Entry) -> None:
        self._running.add(entry)
        if entry.background:
            self.counts['started'] += 1
        task = entry.task = _detached(self._run(entry))  # shared: no request's read
        task.add_done_callback(lambda done: self._ended(entry, done))

    def _ended(self, entry: _Entry, task: asyncio.Task) -> None:
        """A task cancelled before it ran never ran ``_run``'s cleanup: free its slot here."""
        if entry.task is task and entry in self._running:
            self._running.discard(entry)
            self._set_rank(entry, _NO_RANK)
            if not self._closed:
                self._pump()

    async def _run(self, entry: _Entry) -> None:
        read = entry.read
        try:
            data = np.asarray(await retried(lambda: self._read(read, entry.token), self.read_timeout))
            if self.cache is not None:  # kept even if its readers were cancelled
                self._keep(self.cache, read, data)
        except asyncio.CancelledError:
            if entry.requeue and entry.interests and not self._closed:
                entry.requeue, entry.task = False, None  # preempted: queued again
                heapq.heappush(self._heap, (entry.rank, next(self._seq), entry))
                self._pump()
                return
            if not entry.future.done():
                entry.future.cancel()
        except Exception as exc:  # noqa: BLE001 - each reader raises it
            self._failed[read.key] = (time.monotonic(), without_traceback(exc))
            entry.future.set_exception(exc)
            del exc
        else:
            if entry.background:
                self.counts['done'] += 1
            entry.future.set_result(data)
        self._running.discard(entry)
        self._set_rank(entry, _NO_RANK)
        # Whoever waits holds the future; a stale heap item holding the entry must not hold the
        # chunk too (until it reaches the top).
        entry.future = _SETTLED
        if self._entries.get(read.key) is entry:
            del self._entries[read.key]
        self._pump()

    @staticmethod
    def _keep(cache: Any, read: ChunkRead, data: np.ndarray) -> None:
        """Put ``read``'s chunk in the cache. A chunk read together with others is a view of
        their array and keeps all of it (counted once); one of an array larger than the whole
        budget is kept as a copy."""
        buffer = owner(data) if read.together is not None else None
        if buffer is not None and buffer.nbytes > cache.max_bytes:
            data, buffer = data.copy(), None
        cache.put(read.key, data, buffer)

    def _read(self, read: ChunkRead, token: CancelToken) -> Any:
        """One attempt at ``read`` (a coroutine)."""
        if read.together is not None:
            return read.source.read_chunk_of(read.together, read.chunk, read.region, self.env, token)
        return read.source.read_chunk(read.chunk, read.region, self.env, token)


def _detached(coro: Any) -> asyncio.Task:
    """A task on this loop in an empty context, not a copy of the caller's (a request's): the
    timers its reads cancel (timeouts) stay in the loop's schedule for a while, each holding its
    task's context, and a request's context holds its task and response."""
    return asyncio.get_running_loop().create_task(coro, context=contextvars.Context())


async def _loop_quiet(max_turns: int = 32) -> None:
    """Return once nothing else on this loop is ready to run: what was started before waits for
    the network (its requests are out). Without the loop's ready queue to look at (another loop
    implementation), after a few passes (the loop runs ready callbacks first in, first out)."""
    loop = asyncio.get_running_loop()
    ready = getattr(loop, '_ready', None)
    for turn in range(max_turns):
        await asyncio.sleep(0)
        if ready is None and turn >= 7:
            return
        if ready is not None and not ready:
            return
