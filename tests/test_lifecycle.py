"""Viewer and slicer lifecycles under load: nothing left running, nothing raised, nothing hangs."""

from __future__ import annotations

import threading

import numpy as np

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
