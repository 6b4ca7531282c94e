"""Image and Labels sliced off the main thread with an O(1) apply, checked against napari's slicing.

Every check compares what our slicer showed (what vispy was handed, the layer's slice, thumbnail
and contrast limits) with napari's synchronous slicing of the same layer in the same state: the
reference re-slices the layer with napari's own ``Layer.refresh`` inside ``force_sync()``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from napari_async_slicing import _napari_compat as compat
from napari_async_slicing.layers._slice import _display, _scalar_field

from .conftest import vispy_data

FAST = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
    # no shrinking: each example is a round trip through a real viewer
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)


def settle(viewer) -> None:
    viewer._layer_slicer.wait_until_idle(timeout=20)


def shown(viewer, layer) -> dict:
    """Everything a user sees of the layer (copied)."""
    return {
        'vispy': np.array(vispy_data(viewer, layer)),
        'raw': np.array(layer._slice.image.raw),
        'thumbnail': np.array(layer.thumbnail),
        'contrast_limits': list(getattr(layer, 'contrast_limits', [])),
        'contrast_limits_range': list(getattr(layer, 'contrast_limits_range', [])),
        'ndisplay': layer._slice_input.ndisplay,
    }


def napari_reference(viewer, layer) -> dict:
    """napari's synchronous slicing of the same layer at the same dims."""
    with viewer._layer_slicer.force_sync():
        layer.refresh()
    return shown(viewer, layer)


def assert_same(ours: dict, reference: dict) -> None:
    for name in ('vispy', 'raw', 'thumbnail'):
        a, b = ours[name], reference[name]
        assert a.dtype == b.dtype, name
        assert a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    np.testing.assert_allclose(ours['contrast_limits'], reference['contrast_limits'])
    np.testing.assert_allclose(ours['contrast_limits_range'], reference['contrast_limits_range'])
    assert ours['ndisplay'] == reference['ndisplay']


def assert_fast_path(layer) -> None:
    """The slice was applied from precomputed display data (not napari's main-thread conversion)."""
    assert _scalar_field.handles_response(layer._slice), type(layer._slice)


# --- strategies ----------------------------------------------------------------------------------


@st.composite
def image_arrays(draw) -> tuple[np.ndarray, bool]:
    rgb = draw(st.booleans())
    ndim = draw(st.integers(2, 4))
    shape = tuple(draw(st.lists(st.integers(2, 9), min_size=ndim, max_size=ndim)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if rgb:
        shape = (*shape, draw(st.sampled_from([3, 4])))
        dtype = draw(st.sampled_from(['uint8', 'float32']))
        if dtype == 'uint8':
            data = rng.integers(0, 256, shape).astype('uint8')
        else:
            data = rng.random(shape, dtype='float32')
        return data, True
    dtype = draw(st.sampled_from(['uint8', 'uint16', 'int32', 'float32', 'float64']))
    if dtype in ('float32', 'float64'):
        scale = draw(st.sampled_from([1.0, 1e3, 1e-6]))
        data = (rng.standard_normal(shape) * scale).astype(dtype)
        specials = draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), max_size=3))
        flat = data.reshape(-1)
        for value in specials:
            flat[rng.integers(0, flat.size)] = value
    else:
        high = min(np.iinfo(dtype).max, 5000)
        data = rng.integers(0, high, shape).astype(dtype)
    return data, False


@st.composite
def dims_states(draw, ndim: int) -> dict:
    ndisplay = draw(st.sampled_from([2, 3])) if ndim >= 3 else 2
    order = tuple(draw(st.permutations(range(ndim))))
    return {
        'ndisplay': ndisplay,
        'order': order,
        'step_fraction': draw(st.lists(st.floats(0, 1), min_size=ndim, max_size=ndim)),
        'scale': tuple(draw(st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=ndim, max_size=ndim))),
        'translate': tuple(
            draw(st.lists(st.sampled_from([-3.0, 0.0, 1.5]), min_size=ndim, max_size=ndim))
        ),
    }


def set_dims(viewer, state: dict) -> None:
    dims = viewer.dims
    dims.ndisplay = state['ndisplay']
    dims.order = state['order']
    steps = [int(f * (n - 1)) for f, n in zip(state['step_fraction'], dims.nsteps, strict=False)]
    dims.current_step = tuple(steps)


def fresh(viewer) -> None:
    viewer._layer_slicer.wait_until_idle(timeout=20)
    viewer.layers.clear()
    viewer.dims.ndisplay = 2


# --- Image ---------------------------------------------------------------------------------------


@FAST
@given(
    array=image_arrays(),
    data=st.data(),
    colormap=st.sampled_from(['gray', 'viridis', 'magma']),
    gamma=st.sampled_from([1.0, 0.5]),
    auto_contrast=st.booleans(),
    # limits beyond float32 (napari rescales the data for vispy) or too narrow for its precision
    clims=st.sampled_from([None, None, (0.0, 1e40), (1.0, 1.0 + 1e-9)]),
)
def test_image_matches_napari_sync_slicing(
    viewer, array, data, colormap, gamma, auto_contrast, clims
):
    image, rgb = array
    fresh(viewer)
    ndim = image.ndim - int(rgb)
    state = data.draw(dims_states(ndim))
    layer = viewer.add_image(
        image, rgb=rgb, colormap=colormap, gamma=gamma, scale=state['scale'],
        translate=state['translate'],
    )
    if clims is not None and not rgb:
        layer.contrast_limits = clims
    layer.auto_contrast = auto_contrast
    set_dims(viewer, state)
    settle(viewer)
    assert_fast_path(layer)
    ours = shown(viewer, layer)
    assert_same(ours, napari_reference(viewer, layer))


@FAST
@given(
    seed=st.integers(0, 2**16),
    ndim=st.integers(2, 3),
    dtype=st.sampled_from(['int8', 'uint8', 'int16', 'uint16', 'int32', 'uint32', 'int64']),
    big_ids=st.booleans(),
    contour=st.sampled_from([0, 0, 1, 2]),
    direct=st.booleans(),
    show_selected=st.booleans(),
    data=st.data(),
)
def test_labels_match_napari_sync_slicing(
    viewer, seed, ndim, dtype, big_ids, contour, direct, show_selected, data
):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(3, 10, ndim))
    info = np.iinfo(dtype)
    # napari's direct colormap needs numba for ids beyond 2**16 (not installed here)
    high = info.max if big_ids and info.bits > 16 and not direct else min(info.max, 40)
    labels = rng.integers(max(info.min, -5), high, shape, dtype=dtype, endpoint=True)
    fresh(viewer)
    state = data.draw(dims_states(ndim))
    kwargs = {}
    if direct:
        ids = [int(v) for v in np.unique(labels)[:6]]
        colors = ['red', 'green', 'blue', 'yellow', 'cyan', 'magenta']
        kwargs['colormap'] = {None: 'white', **dict(zip(ids, colors, strict=False))}
    layer = viewer.add_labels(labels, scale=state['scale'], translate=state['translate'], **kwargs)
    layer.contour = contour
    layer.selected_label = int(labels.flat[0])
    layer.show_selected_label = show_selected
    set_dims(viewer, state)
    settle(viewer)
    assert_fast_path(layer)
    ours = shown(viewer, layer)
    assert_same(ours, napari_reference(viewer, layer))


# --- by value ------------------------------------------------------------------------------


def test_changes_after_submit_do_not_reach_the_in_flight_request(viewer):
    """The worker's request holds the settings of its submit; apply notices later changes."""
    volume = np.arange(4 * 16 * 16, dtype='float32').reshape(4, 16, 16)
    layer = viewer.add_image(volume, contrast_limits=(0, 100))
    settle(viewer)
    request = _scalar_field.prepare(compat.make_slice_request(layer, viewer.dims), layer)
    before = request.display
    layer.contrast_limits = (0, 1e40)  # needs rescaling for vispy: another display
    layer.colormap = 'magma'
    layer.data = volume * 2
    assert request.display == before
    response = request()
    assert response.display_key == before.key
    assert response.display_key != _display.display_key(layer)
    # The response was computed from the data of its submit, not the replaced data.
    step = int(np.round(request.data_slice.point[0]))
    np.testing.assert_array_equal(response.image.raw, volume[step])


def test_changes_while_a_read_is_in_flight_show_what_napari_shows(
    viewer, server, remote_volume, qtbot
):
    """Colormap, gamma and contrast changed while a remote read is in flight: the slice that lands
    is shown with the settings of the moment, as napari's own slicing shows it."""
    with viewer.sync_slicing():
        layer = viewer.add_image(remote_volume, contrast_limits=(0, 900))
    server.configure(latency=0.4)
    viewer.dims.current_step = (7, *viewer.dims.current_step[1:])
    qtbot.waitUntil(lambda: server.in_flight > 0, timeout=3000)
    assert not layer.loaded
    layer.colormap = 'magma'
    layer.gamma = 0.5
    layer.contrast_limits = (10, 700)
    qtbot.waitUntil(lambda: layer.loaded, timeout=10000)
    settle(viewer)
    assert_fast_path(layer)
    ours = shown(viewer, layer)
    server.configure(latency=0)
    assert_same(ours, napari_reference(viewer, layer))
    assert ours['contrast_limits'] == [10, 700]


def test_settings_changed_before_apply_fall_back_to_napari(viewer, qtbot):
    """A response whose display settings are stale is applied the napari way (same as napari)."""
    volume = np.random.default_rng(0).integers(0, 2**31, (3, 12, 12), dtype='int64')
    layer = viewer.add_labels(volume)
    settle(viewer)
    request = _scalar_field.prepare(compat.make_slice_request(layer, viewer.dims), layer)
    response = request()
    layer.show_selected_label = True  # changes the colormap cast of wide ints
    settle(viewer)
    _scalar_field.apply(layer, response)
    assert not _scalar_field.handles_response(layer._slice)  # napari's own conversion
    ours = shown(viewer, layer)
    assert_same(ours, napari_reference(viewer, layer))


# --- first slice, multiscale, painting ----------------------------------------------------


def test_first_slice_contrast_of_lazy_data_matches_napari(viewer, make_napari_viewer):
    """Lazy float data: contrast range and limits come from the first slice (napari's
    ``_should_calc_clims``)."""
    da = pytest.importorskip('dask.array')
    rng = np.random.default_rng(3)
    volume = (rng.standard_normal((5, 20, 20)) * 50 + 7).astype('float32')
    volume[1, 3, 3] = np.nan
    ours = viewer.add_image(da.from_array(volume, chunks=(1, 10, 10)), name='ours')
    settle(viewer)
    assert_fast_path(ours)
    with viewer._layer_slicer.force_sync():
        ref = viewer.add_image(da.from_array(volume, chunks=(1, 10, 10)), name='napari')
    assert ours.contrast_limits == ref.contrast_limits
    assert ours.contrast_limits_range == ref.contrast_limits_range
    np.testing.assert_array_equal(ours.thumbnail, ref.thumbnail)


@pytest.mark.parametrize('ndisplay', [2, 3])
def test_multiscale_thumbnail_comes_from_the_thumbnail_level(viewer, ndisplay):
    base = np.random.default_rng(5).integers(0, 1000, (8, 64, 64), dtype='uint16')
    levels = [base, base[:, ::2, ::2].copy(), base[:, ::4, ::4].copy()]
    layer = viewer.add_image(levels, multiscale=True, contrast_limits=(0, 1000), colormap='viridis')
    viewer.dims.ndisplay = ndisplay
    viewer.dims.current_step = (5, *viewer.dims.current_step[1:])
    settle(viewer)
    assert_fast_path(layer)
    level = layer._thumbnail_level
    small = layer._slice.thumbnail.raw
    thumb_shape = layer._thumbnail_shape[:2]
    assert max(small.shape[-2:]) <= max(thumb_shape)
    # The precomputed thumbnail was built from the thumbnail level, not the shown level.
    source = levels[level][5] if ndisplay == 2 else levels[level].max(axis=0)
    from scipy import ndimage as ndi

    zoom = _display.thumbnail_zoom(source.shape, thumb_shape)
    expected = ndi.zoom(source, zoom, prefilter=False, order=0)
    np.testing.assert_array_equal(small.reshape(expected.shape), expected)
    ours = shown(viewer, layer)
    assert_same(ours, napari_reference(viewer, layer))


@pytest.mark.parametrize('dtype', ['uint8', 'int32'])
def test_painting_after_an_async_slice_shows_the_paint(viewer, dtype):
    """Painting updates the layer's (here: worker-made, contiguous) view as napari's would be."""
    labels = np.zeros((3, 20, 30), dtype=dtype)
    labels[:, 2:6, 3:9] = 2
    layer = viewer.add_labels(labels)
    viewer.dims.order = (0, 2, 1)  # transposed: the worker made the view contiguous (a copy)
    viewer.dims.current_step = (1, *viewer.dims.current_step[1:])
    settle(viewer)
    assert_fast_path(layer)
    layer.brush_size = 3
    layer.paint((1, 10, 15), 5, refresh=True)
    assert np.any(layer.data[1] == 5)
    after_paint = np.array(layer._slice.image.view)
    reference = napari_reference(viewer, layer)  # napari converts the painted data afresh
    np.testing.assert_array_equal(after_paint, np.array(layer._slice.image.view))
    np.testing.assert_array_equal(reference['raw'], layer.data[1].T)
