"""Viewer and slicer lifecycles under load: nothing left running, nothing raised, nothing hangs."""

from __future__ import annotations

from napari_async_slicing import _live

import gc
import threading
import time

import numpy as np
import pytest

import napari_async_slicing
from napari_async_slicing.components._layer_slicer import AsyncLayerSlicer
from napari_async_slicing.testing import which_plane

from .conftest import SHAPE, slicer_threads, vispy_data

CLIM = (0, 64 * SHAPE[0] + 64)


def step_to(viewer, z: int) -> None:
    viewer.dims.current_step = (z, *viewer.dims.current_step[1:])


def test_twenty_viewers_closed_mid_load_leave_no_thread(
    make_napari_viewer, slicer_enabled, server, remote_volume, qtbot, errors
):
    baseline = {t.ident for t in threading.enumerate()}
    server.configure(latency=0.5)
    for i in range(20):
        viewer = make_napari_viewer(show=i % 5 == 0)  # some shown, most hidden: both paths
        layer = viewer.add_image(remote_volume, contrast_limits=CLIM)
        step_to(viewer, 1 + i % 4)  # never the centre plane add_image may already have read
        qtbot.waitUntil(lambda: server.in_flight > 0, timeout=3000)  # a read is in flight
        assert not layer.loaded
        viewer.close()
    qtbot.waitUntil(lambda: not slicer_threads(), timeout=5000)
    # No slicer thread of ours, and no other thread we started, outlives its viewer.
    left = [t for t in threading.enumerate() if t.ident not in baseline and t.name.startswith('napari-async')]
    assert left == []
    assert errors == []  # closing is not a failure to report


def test_disable_while_reads_are_in_flight(make_napari_viewer, server, remote_volume, qtbot, errors):
    napari_async_slicing.enable()
    try:
        viewer = make_napari_viewer(show=True)
        assert isinstance(viewer._layer_slicer, AsyncLayerSlicer)
        with viewer.sync_slicing():
            layer = viewer.add_image(remote_volume, contrast_limits=CLIM)
        server.configure(latency=0.5)
        step_to(viewer, 7)
        qtbot.waitUntil(lambda: server.in_flight > 0, timeout=3000)
    finally:
        napari_async_slicing.disable()
    # The running viewer keeps the slicer it was created with and finishes what it started.
    qtbot.waitUntil(lambda: layer.loaded, timeout=5000)
    assert which_plane(vispy_data(viewer, layer).astype(np.uint16)) == 7
    server.configure(latency=0.0)
    step_to(viewer, 8)
    qtbot.waitUntil(lambda: which_plane(vispy_data(viewer, layer).astype(np.uint16)) == 8, timeout=5000)
    # New viewers get napari's own slicer; closing the old one stops ours.
    assert not isinstance(make_napari_viewer()._layer_slicer, AsyncLayerSlicer)
    viewer.close()
    qtbot.waitUntil(lambda: not slicer_threads(), timeout=5000)
    assert errors == []


def test_removing_a_layer_makes_the_canvas_current_first(viewer, qtbot):
    """napari 0.9.2 runs a removed layer's GL clean-up without making the canvas's context
    current (a segfault under Mesa, found by the soak): viewers on our slicer make it current."""

    layer = viewer.add_image(np.zeros((4, 16, 16), np.uint8))
    canvas = viewer.window._qt_viewer.canvas
    calls: list[str] = []
    original = canvas._scene_canvas.set_current
    canvas._scene_canvas.set_current = lambda *a, **k: (calls.append('current'), original(*a, **k))[1]
    finish = canvas._scene_canvas.context.finish
    canvas._scene_canvas.context.finish = lambda *a, **k: (calls.append('finish'), finish(*a, **k))[1]
    viewer.layers.remove(layer)
    assert 'finish' in calls and calls.index('current') < calls.index('finish'), calls


@pytest.fixture(scope='module')
def big_planes(tmp_path_factory):
    """1024² planes in 128² chunks: 64 chunk reads a plane."""
    from napari_async_slicing.testing import make_volume

    return make_volume(tmp_path_factory.mktemp('big') / 'big.zarr', shape=(4, 1024, 1024), chunks=(1, 128, 128))


@pytest.mark.parametrize('how', ['close', 'disable_in', 'swap'])
def test_close_with_many_reads_in_flight_is_fast(make_napari_viewer, slicer_enabled, big_planes, qtbot, errors, monkeypatch, how):
    from napari_async_slicing import _napari_compat as compat
    from napari_async_slicing.testing import ZarrHTTPServer, open_remote_array

    with ZarrHTTPServer(big_planes.parent, max_seconds=120) as server:
        viewer = make_napari_viewer(show=True)
        with viewer.sync_slicing():
            layer = viewer.add_image(open_remote_array(server.url_for('big.zarr')), contrast_limits=(0, 4000))
        slicer = viewer._layer_slicer
        server.configure(latency=0.5)
        step_to(viewer, 0)
        qtbot.waitUntil(lambda: server.in_flight >= 20, timeout=5000)
        shutdown, shutdown_ms = slicer.shutdown, []
        # napari collects the whole test process's garbage on close: its time is not ours.
        collect, collect_ms = gc.collect, [0.0]

        def timed_collect(*args):
            t = time.perf_counter()
            try:
                return collect(*args)
            finally:
                collect_ms[0] += (time.perf_counter() - t) * 1000

        monkeypatch.setattr(gc, 'collect', timed_collect)

        def timed_shutdown():
            t = time.perf_counter()
            shutdown()
            shutdown_ms.append((time.perf_counter() - t) * 1000)

        slicer.shutdown = timed_shutdown
        t0 = time.perf_counter()
        if how == 'close':
            viewer.close()
        elif how == 'disable_in':
            napari_async_slicing.disable_in(viewer)
        else:
            # No prefetch: the new slicer's own neighbour reads would keep the wire busy.
            napari_async_slicing.enable_in(viewer, cache_bytes=64 << 20, prefetch_radius=0)
        took_ms = (time.perf_counter() - t0) * 1000 - collect_ms[0]
        monkeypatch.undo()
        print(f'{how} with {server.max_in_flight} reads in flight: {took_ms:.0f} ms '
              f'(+ gc.collect {collect_ms[0]:.0f} ms), our shutdown {shutdown_ms[0]:.0f} ms')
        assert not _live.slicer_threads_alive(slicer)
        assert slicer.prefetches_in_flight() == 0
        # napari's own slicer, swapped in, then reads the plane synchronously: not ours to time.
        assert (shutdown_ms[0] if how == 'disable_in' else took_ms) <= 250
        if how == 'swap':  # the new slicer reads the plane again
            qtbot.waitUntil(lambda: layer.loaded, timeout=15000)
        qtbot.waitUntil(lambda: server.in_flight == 0, timeout=2000)  # nothing left on the wire
        if how != 'close':
            viewer.close()


def test_thread_helper_sees_every_pool():
    from napari_async_slicing import _napari_compat as compat

    slicer = AsyncLayerSlicer()
    release = threading.Event()
    try:
        for pool in slicer.pools():
            pool.submit(release.wait, 10)
            assert _live.slicer_threads_alive(slicer)
            release.set()
            pool.shutdown(wait=True)
            release.clear()
            assert not _live.slicer_threads_alive(slicer)
    finally:
        release.set()
        slicer.shutdown()
