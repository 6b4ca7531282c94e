"""enable()/disable(): which slicer new viewers get, and a real viewer showing the right plane."""

from __future__ import annotations

import numpy as np
import pytest
from napari.components import ViewerModel
from napari.components._layer_slicer import _LayerSlicer

import napari_async_slicing
from napari_async_slicing.components._layer_slicer import AsyncLayerSlicer


def test_enable_disable_switch_the_slicer_of_new_viewers():
    assert not napari_async_slicing.is_enabled()
    assert type(ViewerModel()._layer_slicer) is _LayerSlicer
    napari_async_slicing.enable(workers=3)
    try:
        assert napari_async_slicing.is_enabled()
        model = ViewerModel()
        assert isinstance(model._layer_slicer, AsyncLayerSlicer)
        assert model._layer_slicer.options.workers == 3
        assert hasattr(model, 'sync_slicing')
        model._layer_slicer.shutdown()
    finally:
        napari_async_slicing.disable()
    assert not napari_async_slicing.is_enabled()
    assert type(ViewerModel()._layer_slicer) is _LayerSlicer
    assert not hasattr(ViewerModel, 'sync_slicing')


def test_enabled_context_manager_restores():
    with napari_async_slicing.enabled(prefetch_radius=0) as opts:
        assert opts.prefetch_radius == 0
        assert napari_async_slicing.is_enabled()
    assert not napari_async_slicing.is_enabled()


def test_options_validate_and_read_environment(monkeypatch):
    monkeypatch.setenv('NAPARI_ASYNC_SLICING_WORKERS', '5')
    assert napari_async_slicing.SlicingOptions.from_env().workers == 5
    assert napari_async_slicing.SlicingOptions.from_env(workers=2).workers == 2
    with pytest.raises(ValueError):
        napari_async_slicing.SlicingOptions(cache_bytes=2 * 1024**3)
    with pytest.raises(TypeError):
        napari_async_slicing.SlicingOptions.from_env(nonsense=1)


def test_read_engine_option_validates_and_reads_environment(monkeypatch):
    assert napari_async_slicing.SlicingOptions().read_engine == 'auto'
    monkeypatch.setenv('NAPARI_ASYNC_SLICING_READ_ENGINE', 'zarr')
    assert napari_async_slicing.SlicingOptions.from_env().read_engine == 'zarr'
    assert napari_async_slicing.SlicingOptions.from_env(read_engine='tensorstore').read_engine == 'tensorstore'
    monkeypatch.setenv('NAPARI_ASYNC_SLICING_READ_ENGINE', 'fast')
    with pytest.raises(ValueError, match='read_engine'):
        napari_async_slicing.SlicingOptions.from_env()
    with pytest.raises(ValueError, match='read_engine'):
        napari_async_slicing.SlicingOptions(read_engine='TensorStore')


def test_auto_reads_with_what_the_bench_found_faster_where_installed():
    from napari_async_slicing._reading import _tensorstore

    expected = 'tensorstore' if _tensorstore.AUTO_USES_TENSORSTORE and _tensorstore.available() else 'zarr'
    assert _tensorstore.uses_tensorstore('auto') == (expected == 'tensorstore')
    assert not _tensorstore.uses_tensorstore('zarr')
    slicer = AsyncLayerSlicer(napari_async_slicing.SlicingOptions(read_engine='auto'))
    try:
        assert slicer.read_engine == expected
        assert (slicer.queue.env.tensorstore is None) == (expected == 'zarr')
    finally:
        slicer.shutdown()


def test_shown_viewer_gets_the_plane_dims_asks_for(viewer, qtbot):
    data = np.arange(5 * 16 * 16, dtype=np.float32).reshape(5, 16, 16)
    layer = viewer.add_image(data)
    viewer.dims.current_step = (3, 0, 0)
    node = viewer.window._qt_viewer.layer_to_visual[layer].node

    def shows_plane_3():
        np.testing.assert_array_equal(node._data, data[3])

    qtbot.waitUntil(shows_plane_3, timeout=5000)
    assert layer.loaded


def test_viewers_on_our_slicer_run_at_its_switch_interval_until_closed(make_napari_viewer):
    """The thread switch interval is held while a viewer uses our slicer (reads on other threads
    are not held back by the main thread's work) and given back when the last one closes."""
    import sys

    before = sys.getswitchinterval()
    assert before > 0.001  # the interpreter's 5 ms
    with napari_async_slicing.enabled(switch_interval=0.002):
        first = make_napari_viewer()
        assert sys.getswitchinterval() == pytest.approx(0.002)
        second = ViewerModel()  # a model alone (no Qt) uses our slicer too
        assert isinstance(second._layer_slicer, AsyncLayerSlicer)
        first.close()
        assert sys.getswitchinterval() == pytest.approx(0.002)  # the second one still holds it
        second._layer_slicer.shutdown()
    assert sys.getswitchinterval() == pytest.approx(before)


def test_the_shortest_claimed_switch_interval_wins_and_0_leaves_it(make_napari_viewer):
    import sys

    before = sys.getswitchinterval()
    with napari_async_slicing.enabled(switch_interval=0):
        model = ViewerModel()
        assert sys.getswitchinterval() == pytest.approx(before)
        model._layer_slicer.shutdown()
    viewer = make_napari_viewer()
    coarse = napari_async_slicing.enable_in(viewer, switch_interval=0.004)
    assert sys.getswitchinterval() == pytest.approx(0.004)
    other = AsyncLayerSlicer(napari_async_slicing.SlicingOptions(switch_interval=0.0005))
    assert sys.getswitchinterval() == pytest.approx(0.0005)
    other.shutdown()
    assert sys.getswitchinterval() == pytest.approx(0.004)
    napari_async_slicing.disable_in(viewer)  # the live swap shuts our slicer down
    assert coarse.is_shut_down
    assert sys.getswitchinterval() == pytest.approx(before)


def test_switch_interval_option_reads_environment_and_validates(monkeypatch):
    monkeypatch.setenv('NAPARI_ASYNC_SLICING_SWITCH_INTERVAL', '0.0025')
    assert napari_async_slicing.SlicingOptions.from_env().switch_interval == 0.0025
    assert napari_async_slicing.SlicingOptions().switch_interval == 0.0  # off by default
    with pytest.raises(ValueError):
        napari_async_slicing.SlicingOptions(switch_interval=-1)
    with pytest.raises(ValueError):
        napari_async_slicing.SlicingOptions(switch_interval=1.0)
