"""Calls into zarr's event loop: one wake-up per batch, futures that behave like asyncio's."""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest

from napari_async_slicing import _reading
from napari_async_slicing._reading import batched, result_of, start_on_loop

from .conftest import count_loop_calls

TIMEOUT = 5


@pytest.fixture
def loop():
    return _reading.io_loop()


@pytest.fixture
def wakeups(loop, monkeypatch):
    """The calls other threads make into ``loop`` (each one wakes it)."""
    return count_loop_calls(monkeypatch, loop)


def reached(loop, started: set, name: str) -> bool:
    """Whether the loop has run ``name``'s start: it runs callbacks first in, first out, so a
    probe sent now (not batched) runs after anything sent before it."""
    probe = asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop)
    probe.result(TIMEOUT)
    return name in started


async def note(started: set, name: str, seconds: float = 0.0, result=None):
    started.add(name)
    await asyncio.sleep(seconds)
    return result


def test_a_future_gives_the_coroutines_result_or_error():
    assert start_on_loop(note(set(), 'a', result=7)).result(TIMEOUT) == 7

    async def fails():
        raise KeyError('chunk')

    with pytest.raises(KeyError):
        start_on_loop(fails()).result(TIMEOUT)


def test_calls_made_in_a_batch_reach_the_loop_together_at_its_end(loop, wakeups):
    started: set = set()
    with batched():
        futures = [start_on_loop(note(started, n)) for n in 'abc']
        cancelled = start_on_loop(note(started, 'never'))
        cancelled.cancel()
        assert not reached(loop, started, 'a')  # held back: nothing reached the loop yet
        assert len(wakeups) == 1  # only the probe
    assert [f.result(TIMEOUT) for f in futures] == [None] * 3
    assert started == {'a', 'b', 'c'}  # cancelled before it started: never ran
    assert len(wakeups) == 2  # the probe, then one for the whole batch
    assert concurrent.futures.wait([cancelled], TIMEOUT).done == {cancelled}


def test_waiting_inside_a_batch_sends_what_it_waits_for():
    with batched():
        assert result_of(start_on_loop(note(set(), 'a', result='read')), TIMEOUT) == 'read'


def test_cancelling_stops_the_coroutine_and_wakes_waiters(loop):
    stopped = asyncio.Event()

    async def read():
        try:
            await asyncio.sleep(TIMEOUT * 2)
        except asyncio.CancelledError:
            stopped.set()
            raise

    started: set = set()
    future = start_on_loop(note(started, 'a', seconds=TIMEOUT * 2))
    assert concurrent.futures.wait([start_on_loop(asyncio.sleep(0))], TIMEOUT).done
    running = start_on_loop(read())
    assert reached(loop, started, 'a')
    future.cancel()
    running.cancel()
    # ``concurrent.futures.wait`` (a prefetch waiting for its reads) returns for cancelled ones
    done = concurrent.futures.wait([future, running], TIMEOUT).done
    assert done == {future, running}
    assert asyncio.run_coroutine_threadsafe(
        asyncio.wait_for(stopped.wait(), TIMEOUT), loop
    ).result(TIMEOUT * 2) is True
