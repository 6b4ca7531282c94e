"""Drop-in behaviour napari's own viewer tests rely on, with real viewers (issue 23).

- Nothing of ours stays connected to a layer that left the viewer, for every layer type, in a
  shown viewer and in a bare ``ViewerModel``.
- In-memory data that slices fast is sliced before the call that changed it returns: the first
  slice of a new layer, a layer made visible, a dims order or ndisplay change, new ``layer.data``.
  Lazy data never is, and neither is in-memory data too large to slice within a frame.
"""

from __future__ import annotations

from napari_async_slicing.components import _registry

import weakref

import numpy as np
import pytest

from napari_async_slicing import _napari_compat as compat

from .conftest import vispy_data

rng = np.random.default_rng(0)

LAYERS = {
    'image': lambda v: v.add_image(rng.random((5, 16, 16))),
    'labels': lambda v: v.add_labels(rng.integers(0, 9, (5, 16, 16)).astype(np.uint8)),
    'points': lambda v: v.add_points(rng.random((20, 3)) * 5),
    'vectors': lambda v: v.add_vectors(rng.random((10, 2, 3)) * 5),
    'shapes': lambda v: v.add_shapes(
        [np.array([[0, 1, 1], [0, 5, 5], [0, 1, 5]])], shape_type='polygon'
    ),
    'surface': lambda v: v.add_surface(
        (rng.random((4, 3)) * 5, np.array([[0, 1, 2], [1, 2, 3]]), rng.random(4))
    ),
    'tracks': lambda v: v.add_tracks(np.array([[0, t, t, t] for t in range(5)], float)),
}


def _is_ours(callback) -> bool:
    if isinstance(callback, tuple):  # napari keeps bound methods as (weakref(obj), name)
        target = callback[0]() if isinstance(callback[0], weakref.ref) else callback[0]
        return type(target).__module__.startswith('napari_async_slicing')
    return getattr(callback, '__module__', '').startswith('napari_async_slicing')


def ours_connected(layer) -> list[str]:
    """Names of the layer's events (and its loaded signal) a callback of ours listens to."""
    names = [
        name
        for name, emitter in layer.events.emitters.items()
        if any(_is_ours(cb) for cb in emitter.callbacks)
    ]
    signal = compat.loaded_signal(layer)
    if signal is not None and any(
        getattr(getattr(slot, 'dereference', lambda: None)(), '__module__', '').startswith(
            'napari_async_slicing'
        )
        for slot in signal._slots
    ):
        names.append('loaded')
    return names


@pytest.mark.parametrize('kind', sorted(LAYERS))
def test_a_removed_layer_keeps_no_callback_of_ours_in_a_shown_viewer(viewer, kind, qtbot):
    layer = LAYERS[kind](viewer)
    viewer.dims.current_step = (2, *viewer.dims.current_step[1:])
    qtbot.waitUntil(lambda: layer.loaded, timeout=5000)
    viewer.layers.remove(layer)
    assert ours_connected(layer) == []
    assert _registry.managing_slicer(layer) is None
    assert not viewer._layer_slicer.knows(layer)


@pytest.mark.parametrize('kind', sorted(LAYERS))
def test_a_removed_layer_keeps_no_callback_of_ours_in_a_bare_viewer_model(slicer_enabled, kind):
    from napari.components import ViewerModel

    viewer = ViewerModel()
    layer = LAYERS[kind](viewer)
    viewer.layers.remove(layer)
    assert ours_connected(layer) == []
    viewer._layer_slicer.shutdown()


def test_a_remote_labels_layer_removed_mid_load_keeps_nothing_of_ours(
    viewer, server, remote_volume, qtbot
):
    server.configure(latency=0.5)
    layer = viewer.add_labels(remote_volume)
    qtbot.waitUntil(lambda: server.in_flight > 0, timeout=3000)
    viewer.layers.remove(layer)
    assert ours_connected(layer) == []
    assert layer.loaded


def test_fast_in_memory_data_is_sliced_before_the_call_returns(viewer):
    """No event loop runs between each change and the checks after it."""
    data = np.stack([np.full((12, 16), z, np.float64) for z in range(6)])
    layer = viewer.add_image(data)  # the first slice, at the centre step napari moves dims to
    centre = viewer.dims.current_step[0]
    assert layer.loaded and np.all(vispy_data(viewer, layer) == centre)
    assert layer._data_view.dtype == np.float64  # napari's own view; vispy's is a float32 cast

    layer.visible = False
    viewer.dims.current_step = (1, *viewer.dims.current_step[1:])
    layer.visible = True
    assert np.all(layer._slice.image.raw == 1) and np.all(vispy_data(viewer, layer) == 1)

    viewer.dims.order = (1, 0, 2)  # now axis 1 is stepped: planes of (6, 16)
    assert layer._slice.image.raw.shape == (6, 16)

    viewer.dims.ndisplay = 3
    assert layer._slice.image.raw.shape == (12, 6, 16)  # the volume in dims order
    viewer.dims.ndisplay = 2
    viewer.dims.order = (0, 1, 2)

    layer.data = data + 100
    assert np.all(layer._slice.image.raw == 101) and np.all(vispy_data(viewer, layer) == 101)


def test_lazy_data_is_never_sliced_on_the_main_thread(viewer, server, remote_volume, qtbot):
    server.configure(latency=0.2)
    layer = viewer.add_image(remote_volume)
    assert not layer.loaded  # its first read runs on a worker
    qtbot.waitUntil(lambda: layer.loaded, timeout=5000)
    viewer.dims.current_step = (1, *viewer.dims.current_step[1:])  # a plane not read before
    assert not layer.loaded


def test_in_memory_planes_too_large_for_a_frame_are_sliced_on_a_worker(viewer, qtbot):
    data = np.zeros((3, 1024, 1024), np.float32)  # 4 MiB a plane
    layer = viewer.add_image(data)
    assert not layer.loaded
    qtbot.waitUntil(lambda: layer.loaded, timeout=5000)


def test_napari_tests_fail_where_a_viewer_used_napari_slicer(pytester):
    """The plugin that runs napari's tests with ours fails a test whose viewer used another."""
    pytester.makepyfile(
        """
        import napari_async_slicing
        from napari.components import ViewerModel

        def test_ours():
            ViewerModel()

        def test_napari_slicer():
            napari_async_slicing.disable()
            try:
                ViewerModel()
            finally:
                napari_async_slicing.enable()
        """
    )
    result = pytester.runpytest_subprocess(
        '-p', 'napari_async_slicing._pytest_napari', '-p', 'no:cacheprovider', '-p', 'no:pretty'
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(['*used*_LayerSlicer*not our slicer*'])
