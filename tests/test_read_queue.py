"""The read queue on its own (no Qt, no HTTP): tiers, sharing, promotion, preemption, wants."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref

import numpy as np
import pytest

from napari_async_slicing._cache import ChunkCache
from napari_async_slicing._reading import ChunkRead, ChunkSource, ReadQueue, SliceCancelled, Tier
from napari_async_slicing._reading._plan import ChunkPlan, RegularGrid, owner

TIMEOUT = 5


class Source(ChunkSource):
    """Chunks that take ``seconds`` each; every read is logged (chunk, started)."""

    def __init__(self, seconds: float = 0.05) -> None:
        super().__init__(np.zeros((16, 4), np.uint16))
        self.seconds = seconds
        self.started: list[tuple[int, ...]] = []
        self.finished: list[tuple[int, ...]] = []
        self.cancelled: list[tuple[int, ...]] = []

    def plan(self, selection, max_chunk_bytes):  # pragma: no cover - reads are made by hand
        return None

    async def read_chunk(self, chunk, region, env, token):
        self.started.append(chunk)
        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.cancelled.append(chunk)
            raise
        self.finished.append(chunk)
        return np.full((1, 4), chunk[0], np.uint16)

    async def read_whole(self, selection, env, token):  # pragma: no cover
        raise NotImplementedError


def reads(source: Source, rows) -> list[ChunkRead]:
    return [ChunkRead(('src', (r, 0)), source, (r, 0), (slice(r, r + 1), slice(0, 4))) for r in rows]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


def test_a_chunk_wanted_by_two_readers_is_read_once():
    async def scenario():
        source = Source()
        queue = ReadQueue(ChunkCache(1 << 20))
        a, b = await asyncio.gather(queue.fetch(reads(source, [1, 2])), queue.fetch(reads(source, [2, 3])))
        assert sorted(source.started) == [(1, 0), (2, 0), (3, 0)]
        assert a[(2, 0)] is b[(2, 0)]

    run(scenario())


def test_a_reader_that_gives_up_does_not_stop_a_read_someone_else_wants():
    async def scenario():
        source = Source(0.1)
        queue = ReadQueue(None)
        quitter = asyncio.ensure_future(queue.fetch(reads(source, [5])))
        stayer = asyncio.ensure_future(queue.fetch(reads(source, [5])))
        await asyncio.sleep(0.02)
        quitter.cancel()
        assert (await stayer)[(5, 0)][0, 0] == 5
        assert source.started == [(5, 0)] and source.cancelled == []

    run(scenario())


def test_a_read_nobody_wants_any_more_is_cancelled_in_flight():
    async def scenario():
        source = Source(1.0)
        queue = ReadQueue(None)
        reader = asyncio.ensure_future(queue.fetch(reads(source, [1, 2])))
        await asyncio.sleep(0.02)
        reader.cancel()
        await asyncio.sleep(0.02)
        assert sorted(source.cancelled) == [(1, 0), (2, 0)]

    run(scenario())


def test_a_chunk_cached_meanwhile_is_not_read_again():
    """A reader looks in the cache on its worker and reaches the loop a moment later; another
    read may have put the chunk there in between."""

    async def scenario():
        source = Source()
        cache = ChunkCache(1 << 20)
        cache.put(('src', (4, 0)), np.full((1, 4), 9, np.uint16))
        got = await ReadQueue(cache).fetch(reads(source, [4]))
        assert source.started == [] and got[(4, 0)][0, 0] == 9

    run(scenario())


def test_most_urgent_first_and_prefetch_one_plane_at_a_time():
    async def scenario():
        source = Source(0.05)
        queue = ReadQueue(ChunkCache(1 << 20), max_in_flight=1)
        first = asyncio.ensure_future(queue.fetch(reads(source, [1])))
        await asyncio.sleep(0.01)  # the one slot is taken
        queue.want(
            'layer',
            [(r, Tier.PREFETCH, rank) for rank, r in enumerate(reads(source, [10, 11]))]
            + [(r, Tier.PREVIEW, 0) for r in reads(source, [12])],
        )
        await asyncio.gather(first, queue.fetch(reads(source, [2])))
        await asyncio.sleep(0.3)
        # Visible reads first, then the preview, then prefetch in order of priority.
        assert source.started == [(1, 0), (2, 0), (12, 0), (10, 0), (11, 0)]

    run(scenario())


def test_reads_of_a_more_urgent_rank_go_out_before_the_next_rank_starts():
    """A coarse first look (priority 0) and its plane (priority 1) wanted together: the plane's
    reads start only once the coarse read had time to go out (sent first, answered first)."""
    from napari_async_slicing._reading._queue import LET_OUT_S

    class Timed(Source):
        async def read_chunk(self, chunk, region, env, token):
            self.times.append((chunk, asyncio.get_running_loop().time()))
            return await super().read_chunk(chunk, region, env, token)

    async def scenario():
        source = Timed(0.05)
        source.times = []
        queue = ReadQueue(ChunkCache(1 << 20))
        wanted = reads(source, [1, 2, 3])
        queue.want('layer', [(wanted[0], Tier.VISIBLE, 0)] + [(r, Tier.VISIBLE, 1) for r in wanted[1:]])
        await asyncio.sleep(0.2)
        times = dict(source.times)
        assert source.started[0] == (1, 0)
        assert min(times[(2, 0)], times[(3, 0)]) - times[(1, 0)] >= LET_OUT_S

    run(scenario())


def test_prefetch_reads_one_plane_at_a_time():
    async def scenario():
        source = Source(0.05)
        queue = ReadQueue(ChunkCache(1 << 20))
        plane = {10: 0, 11: 0, 20: 1, 21: 1}
        queue.want('layer', [(r, Tier.PREFETCH, plane[r.chunk[0]]) for r in reads(source, plane)])
        await asyncio.sleep(0.02)
        assert sorted(source.started) == [(10, 0), (11, 0)]  # the second plane waits
        await asyncio.sleep(0.2)
        assert sorted(source.finished) == [(10, 0), (11, 0), (20, 0), (21, 0)]

    run(scenario())


def test_a_visible_read_joins_and_promotes_a_prefetch_of_its_chunk():
    async def scenario():
        source = Source(0.1)
        queue = ReadQueue(ChunkCache(1 << 20))
        queue.want('layer', [(r, Tier.PREFETCH, 0) for r in reads(source, [7])])
        await asyncio.sleep(0.02)
        await queue.fetch(reads(source, [7]))
        assert source.started == [(7, 0)]  # read once: the visible reader joined it
        assert queue.counts['done'] == 0  # it was promoted: a visible read, not a prefetch

    run(scenario())


def test_a_visible_read_preempts_background_reads_when_every_slot_is_taken():
    async def scenario():
        source = Source(0.5)
        queue = ReadQueue(ChunkCache(1 << 20), max_in_flight=1)
        queue.want('layer', [(r, Tier.PREVIEW, 0) for r in reads(source, [3])])
        await asyncio.sleep(0.02)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await queue.fetch(reads(source, [1]))
        assert loop.time() - started < 0.9  # not behind the preview's whole read
        assert source.cancelled == [(3, 0)]
        await asyncio.sleep(0.6)
        assert source.finished[-1] == (3, 0)  # requeued, then read

    run(scenario())


def test_wanting_something_else_drops_what_is_no_longer_wanted():
    async def scenario():
        source = Source(1.0)
        queue = ReadQueue(ChunkCache(1 << 20))
        queue.want('layer', [(r, Tier.PREFETCH, 0) for r in reads(source, [1, 2])])
        await asyncio.sleep(0.02)
        assert queue.background == 2
        queue.want('layer', [(r, Tier.PREFETCH, 0) for r in reads(source, [2])])
        await asyncio.sleep(0.02)
        assert source.cancelled == [(1, 0)] and queue.counts['cancelled'] == 1
        queue.want('layer', [])
        await asyncio.sleep(0.02)
        assert queue.background == 0 and sorted(source.cancelled) == [(1, 0), (2, 0)]

    run(scenario())


def test_a_failed_chunk_fails_the_read_and_is_not_kept():
    class Failing(Source):
        async def read_chunk(self, chunk, region, env, token):
            if chunk == (2, 0):
                raise FileNotFoundError('chunk 2')  # not transient: no retry
            return await super().read_chunk(chunk, region, env, token)

    async def scenario():
        source = Failing()
        cache = ChunkCache(1 << 20)
        with pytest.raises(FileNotFoundError):
            await ReadQueue(cache).fetch(reads(source, [1, 2]))
        assert ('src', (2, 0)) not in cache

    run(scenario())


def test_close_cancels_everything():
    async def scenario():
        source = Source(1.0)
        queue = ReadQueue(None)
        reader = asyncio.ensure_future(queue.fetch(reads(source, [1])))
        await asyncio.sleep(0.02)
        queue.close()
        with pytest.raises(SliceCancelled):
            await reader
        assert source.cancelled == [(1, 0)]

    run(scenario())


def test_a_chunk_that_just_failed_fails_again_without_another_read():
    """The reads a step predicts and the request's own ask for the same chunks: one failure,
    one request (a corrupt chunk is asked for once)."""

    class Corrupt(Source):
        async def read_chunk(self, chunk, region, env, token):
            self.started.append(chunk)
            raise ValueError('cannot decode')

    async def scenario():
        source = Corrupt()
        queue = ReadQueue(ChunkCache(1 << 20))
        queue.want('layer', [(r, Tier.VISIBLE, 1) for r in reads(source, [1])])
        await asyncio.sleep(0.02)  # the predicted read failed, nobody waiting
        with pytest.raises(ValueError):
            await queue.fetch(reads(source, [1]))
        assert source.started == [(1, 0)]

    run(scenario())


def test_a_read_given_up_before_its_task_ran_frees_its_slot():
    """Cancelled before its first step, a read's task never runs its own cleanup."""

    async def scenario():
        source = Source(0.01)
        queue = ReadQueue(None, max_in_flight=1)
        queue.want('layer', [(r, Tier.VISIBLE, 0) for r in reads(source, [1])])
        queue.want('layer', [])
        got = await queue.fetch(reads(source, [2]))
        assert got[(2, 0)][0, 0] == 2 and queue._running == set()

    run(scenario())


_request: contextvars.ContextVar = contextvars.ContextVar('request')


def test_finished_reads_do_not_hold_their_requests_context():
    """A read's timeout is a timer, and a cancelled timer stays in the loop's schedule until it
    would have fired, holding its task's context: a request's context holds its response."""

    class Whole(Source):
        async def read_whole(self, selection, env, token):
            await asyncio.sleep(0.01)
            return np.zeros((1, 4), np.uint16)

    class Response:
        pass

    async def scenario():
        source = Whole(0.01)
        queue = ReadQueue(None, read_timeout=60)
        response = Response()

        async def request(response):
            _request.set(response)
            await queue.fetch(reads(source, [1, 2]))
            await queue.read_whole(source, (slice(0, 1),), None)

        await asyncio.ensure_future(request(response))
        await asyncio.sleep(0.02)
        held = weakref.ref(response)
        del response
        gc.collect()
        assert held() is None

    run(scenario())


# --- a plane read as one: its chunks are views of one array ------------------------------------


def test_chunks_that_are_views_of_one_array_laid_out_as_the_selection_assemble_to_it():
    """A source that read a request's chunks as one read hands over views of its array: where
    that array is the selection, the plane is that array (no copy); anywhere else a copy."""
    plan = ChunkPlan((6, 8, 8), [RegularGrid(6, 1), RegularGrid(8, 4), RegularGrid(8, 4)], (3,))
    box = np.arange(64, dtype=np.uint16).reshape(1, 8, 8)  # what reading z=3 as one gave

    def views(array):
        return {c: array[:, r[1], r[2]] for c in plan.chunks for r in [plan.region(c)]}

    plane = plan.assemble(views(box), np.dtype(np.uint16))
    assert owner(plane) is owner(box) and plane.shape == (8, 8)
    np.testing.assert_array_equal(plane, box[0])
    shuffled = views(box)
    first, second = plan.chunks[:2]
    shuffled[first], shuffled[second] = shuffled[second], shuffled[first]
    copied = plan.assemble(shuffled, np.dtype(np.uint16))  # views, but not where they belong
    assert owner(copied) is not owner(box)
    np.testing.assert_array_equal(copied[:4, :4], box[0, :4, 4:])
    separate = {c: v.copy() for c, v in views(box).items()}
    np.testing.assert_array_equal(plan.assemble(separate, np.dtype(np.uint16)), box[0])
    half = ChunkPlan((6, 8, 8), [RegularGrid(6, 1), RegularGrid(8, 4), RegularGrid(8, 4)], (3, slice(0, 6)))
    partial = {c: box[:, r[1], r[2]] for c in half.chunks for r in [half.region(c)]}
    np.testing.assert_array_equal(half.assemble(partial, np.dtype(np.uint16)), box[0, :6])


def test_the_cache_counts_the_array_its_chunks_are_views_of_once():
    """Chunks kept as views of one array keep all of it: it is counted whole, once, and its
    bytes are freed only with the last of them; an array larger than the budget is not kept."""
    plane = np.zeros((8, 8), np.uint16)  # 128 bytes
    parts = [plane[:4, :4], plane[:4, 4:], plane[4:, :4], plane[4:, 4:]]
    cache = ChunkCache(300)
    for i, part in enumerate(parts):
        cache.put(('a', i), part, plane)
    assert cache.bytes == plane.nbytes and len(cache) == 4
    other = np.zeros((8, 8), np.uint16)
    cache.put(('b', 0), other[:4], other)
    assert cache.bytes == 2 * plane.nbytes
    for i in (0, 1, 2):
        cache.get(('a', i))  # ('a', 3), then ('b', 0), are the least recently used
    cache.put(('c', 0), np.zeros(40, np.uint16))  # 80 bytes: ('a', 3) frees nothing, ('b', 0) all
    assert [cache.peek(('a', i)) is not None for i in range(4)] == [True, True, True, False]
    assert cache.peek(('b', 0)) is None and cache.bytes == plane.nbytes + 80
    cache.put(('c', 1), np.zeros(50, np.uint16))  # 100 more: the last views of ``plane`` free it
    assert len(cache) == 2 and cache.bytes == 80 + 100
    small = ChunkCache(100)
    small.put(('a', 0), parts[0], plane)  # 32 bytes of a 128-byte array
    assert len(small) == 0 and small.bytes == 0
