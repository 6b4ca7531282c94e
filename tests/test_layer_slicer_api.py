"""The slicer's napari-compatible API with controllable fake layers (no Qt)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest
from napari.components import Dims

from napari_async_slicing._options import SlicingOptions
from napari_async_slicing._reading import SliceCancelled, current_token
from napari_async_slicing.components._layer_slicer import AsyncLayerSlicer


@dataclass(frozen=True)
class SliceInput:
    ndisplay: int


@dataclass(frozen=True)
class Request:
    id: int
    point: tuple
    gate: threading.Event
    slice_input: SliceInput = SliceInput(2)

    def __call__(self) -> tuple:
        assert threading.current_thread() is not threading.main_thread()
        while not self.gate.wait(0.01):
            current_token().raise_if_cancelled()  # a read that notices cancellation
        return (self.id, self.point)


class Layer:
    """Just enough of a napari layer for the slicer: request, response, loaded state."""

    def __init__(self, ndisplay: int = 2) -> None:
        self.ndisplay = ndisplay
        self.visible = True
        self.gate = threading.Event()
        self.applied: list = []
        self.loaded = True
        self._last = -1
        self._n = 0

    @property
    def _slicing_state(self):
        return self

    def _make_slice_request(self, dims):
        self._n += 1
        return Request(self._n, tuple(dims.point), self.gate, SliceInput(self.ndisplay))

    def _update_slice_response(self, response):
        self.applied.append(response)

    def _set_unloaded_slice_id(self, slice_id):
        self._last, self.loaded = slice_id, False

    def _update_loaded_slice_id(self, slice_id):
        if slice_id == self._last:
            self.loaded = True

    def _slice_dims(self, dims, force=False):
        self.applied.append(('sync', tuple(dims.point)))


@pytest.fixture
def slicer():
    s = AsyncLayerSlicer()
    yield s
    s.shutdown()


def wait_for(condition, timeout: float) -> bool:
    """Poll ``condition`` until true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def dims_at(z: int) -> Dims:
    return Dims(ndim=3, range=((0, 10, 1),) * 3, point=(z, 0, 0))


def stopped(future) -> bool:
    """Superseded: dropped before it started, or stopped mid-read."""
    return future.cancelled() or isinstance(future.exception(timeout=5), SliceCancelled)


def test_newer_request_supersedes_older_ones(slicer):
    layer = Layer()
    first = slicer.submit(layers=[layer], dims=dims_at(1))
    second = slicer.submit(layers=[layer], dims=dims_at(2))
    third = slicer.submit(layers=[layer], dims=dims_at(3))
    assert stopped(first) and stopped(second)
    layer.gate.set()
    assert third.result(timeout=5)
    slicer.wait_until_idle(timeout=5)
    assert layer.applied == [(3, (3.0, 0.0, 0.0))]  # only the newest was applied
    assert layer.loaded


def test_identical_request_is_coalesced_unless_forced(slicer):
    layer = Layer()
    first = slicer.submit(layers=[layer], dims=dims_at(4))
    assert slicer.submit(layers=[layer], dims=dims_at(4)) is first
    forced = slicer.submit(layers=[layer], dims=dims_at(4), force=True)
    assert forced is not first
    layer.gate.set()
    slicer.wait_until_idle(timeout=5)
    assert [r[1] for r in layer.applied] == [(4.0, 0.0, 0.0)]


def test_layers_are_independent(slicer):
    slow, fast = Layer(), Layer()
    fast.gate.set()
    future = slicer.submit(layers=[slow, fast], dims=dims_at(2))
    assert wait_for(lambda: fast.loaded, timeout=5)  # while the slow layer is still blocked
    assert fast.applied and not slow.applied and fast.loaded and not slow.loaded
    slow.gate.set()
    assert len(future.result(timeout=5)) == 2


def test_force_sync_makes_in_flight_responses_stale(slicer):
    layer = Layer()
    slicer.submit(layers=[layer], dims=dims_at(5))
    with slicer.force_sync():
        assert slicer.submit(layers=[layer], dims=dims_at(6)) is None
    layer.gate.set()
    slicer.wait_until_idle(timeout=5)
    assert layer.applied == [('sync', (6.0, 0.0, 0.0))]
    assert layer.loaded


def test_shutdown_stops_blocked_reads_and_rejects_new_work():
    slicer = AsyncLayerSlicer()
    layer = Layer()
    future = slicer.submit(layers=[layer], dims=dims_at(1))
    slicer.shutdown()  # must not hang on the gated read
    assert future.done()
    with pytest.raises(RuntimeError):
        slicer.submit(layers=[layer], dims=dims_at(2))


def test_heavy_work_never_starves_interactive_requests():
    slicer = AsyncLayerSlicer(SlicingOptions(workers=1, heavy_slots=1))
    try:
        volumes = [Layer(ndisplay=3) for _ in range(3)]  # more heavy work than heavy slots
        slicer.submit(layers=volumes, dims=dims_at(1))
        plane = Layer()
        plane.gate.set()
        slicer.submit(layers=[plane], dims=dims_at(1))
        assert wait_for(lambda: plane.loaded and plane.applied, timeout=5)
        assert not any(v.loaded for v in volumes)
        for v in volumes:
            v.gate.set()
        slicer.wait_until_idle(timeout=5)
        assert all(v.loaded for v in volumes)
    finally:
        slicer.shutdown()


def test_current_token_outside_a_request_is_never_cancelled():
    from napari_async_slicing._reading import CancelToken, reading

    token = CancelToken()
    with reading(token=token):
        assert current_token() is token
    current_token().raise_if_cancelled()  # after the block: the never-cancelled token
    assert not current_token().cancelled


@dataclass(frozen=True)
class TimedRequest:
    """A read that takes ``seconds`` and notices cancellation, like a chunked remote read."""

    id: int
    point: tuple
    seconds: float

    def __call__(self) -> tuple:
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            current_token().raise_if_cancelled()
            time.sleep(0.002)
        return (self.id, self.point)


class TimedLayer(Layer):
    seconds = 0.2

    def _make_slice_request(self, dims):
        self._n += 1
        return TimedRequest(self._n, tuple(dims.point), self.seconds)


def test_nearly_done_request_finishes_and_is_shown_on_the_way(slicer):
    layer = TimedLayer()
    slicer.submit(layers=[layer], dims=dims_at(1))
    slicer.wait_until_idle(timeout=5)  # the layer's read time is now known (~0.2 s)
    second = slicer.submit(layers=[layer], dims=dims_at(2))
    assert wait_for(lambda: bool(slicer._scheduler.lane(layer).started), timeout=5)
    time.sleep(0.15)  # three quarters through the read (the threshold is a quarter)
    slicer.submit(layers=[layer], dims=dims_at(3))
    slicer.submit(layers=[layer], dims=dims_at(4))  # plane 3 barely started (or not at all)
    slicer.wait_until_idle(timeout=5)
    shown = [r[1][0] for r in layer.applied]
    assert second.result(timeout=5)  # finished although superseded
    assert shown == [1.0, 2.0, 4.0]  # plane 2 on the way; plane 3 was cancelled; never out of order


def test_responses_that_finish_while_the_main_thread_is_busy_show_only_the_newest(slicer):
    """Two planes of a layer finish before the main thread gets to them: it shows one (the
    newer), never both in a row (two texture uploads for one frame), and the layer is loaded."""
    posted: list = []
    slicer.attach_main_thread(posted.append)  # the main thread is busy: nothing it is sent runs yet
    layer = TimedLayer()
    layer.seconds = 0.03  # slow enough to go to a worker, not inline
    first = slicer.submit(layers=[layer], dims=dims_at(1))
    assert first.result(timeout=5)
    second = slicer.submit(layers=[layer], dims=dims_at(2))
    assert second.result(timeout=5)
    assert layer.applied == [] and len(posted) == 1  # one drain asked for, for both
    posted.pop()()  # the main thread gets to it
    assert layer.applied == [(2, (2.0, 0.0, 0.0))]
    assert layer.loaded
    assert slicer.stats()[0]['stale'] == 1 and slicer.stats()[0]['applied'] == 1


class FrameClock:
    """A main thread that is busy until told otherwise, and shows frames when told to."""

    def __init__(self) -> None:
        self.posted: list = []
        self.frames = 0
        self.waiting: list = []

    def __call__(self, fn) -> None:
        self.posted.append(fn)

    def frame(self) -> int:
        return self.frames

    def after_frame(self, fn) -> None:
        self.waiting.append(fn)

    def run_posted(self) -> None:
        posted, self.posted = self.posted, []
        for fn in posted:
            fn()

    def show_frame(self) -> None:
        self.frames += 1
        waiting, self.waiting = self.waiting, []
        for fn in waiting:
            fn()


def test_a_layer_is_shown_at_most_once_per_frame_newest_wins(slicer):
    """Planes that finish within one displayed frame: the first is shown, later ones wait for the
    next frame, and only the newest of them is shown then (no upload nobody sees)."""
    main = FrameClock()
    slicer.attach_main_thread(main)
    layer = TimedLayer()
    layer.seconds = 0.03  # slow enough to go to a worker, not inline
    for z in (1, 2, 3):
        assert slicer.submit(layers=[layer], dims=dims_at(z)).result(timeout=5)
        main.run_posted()
    assert [r[1][0] for r in layer.applied] == [1.0]  # 2 and 3 came within frame 0
    main.show_frame()
    main.run_posted()
    assert [r[1][0] for r in layer.applied] == [1.0, 3.0]
    assert layer.loaded
    assert slicer.stats()[0]['stale'] == 1  # plane 2: never uploaded
