"""Points, Vectors, Shapes, Tracks, Surface: what our slicer shows equals napari's own sync slicing.

Each test adds a layer to a real viewer (our slicer), drives dims / scale / translate with
hypothesis, waits for slicing to settle, and compares the layer's view state with a twin layer
(same data and transform, in no viewer) sliced by napari's own synchronous path
(``Layer._slice_dims``). Also: Shapes and Tracks slice off the main thread, an in-flight request
is unaffected by later edits, and layer types we do not handle keep napari's slicing.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from napari.layers import Points, Shapes, Surface, Tracks, Vectors

from napari_async_slicing.layers import _slice as _slice_api
from napari_async_slicing.layers._slice import _shapes, _tracks

SETTINGS = settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

NZ = 6
RNG = np.random.default_rng(1)


@st.composite
def dims_states(draw):
    """(current_step, order, ndisplay, scale, translate) for a 3D world."""
    step = tuple(draw(st.integers(0, NZ - 1)) for _ in range(3))
    order = tuple(draw(st.permutations(range(3))))
    ndisplay = draw(st.sampled_from((2, 2, 3)))
    scale = (draw(st.sampled_from((1.0, 2.0, 0.5))), 1.0, draw(st.sampled_from((1.0, 1.5))))
    translate = (draw(st.sampled_from((0.0, 1.0, -2.0))), draw(st.sampled_from((0.0, 3.0))), 0.0)
    return step, order, ndisplay, scale, translate


def settle(viewer, qtbot, layer, state, twin):
    """Apply ``state`` to viewer + layer, wait for our slicer, slice the twin with napari's path."""
    step, order, ndisplay, scale, translate = state
    layer.scale = twin.scale = scale
    layer.translate = twin.translate = translate
    viewer.dims.ndisplay = ndisplay
    viewer.dims.order = order
    viewer.dims.current_step = step
    slicer = viewer._layer_slicer
    qtbot.waitUntil(lambda: not slicer._scheduler.in_flight(), timeout=10000)
    slicer.wait_until_idle(timeout=10)
    qtbot.waitUntil(lambda: layer.loaded, timeout=5000)
    twin._slice_dims(viewer.dims, force=False)
    twin._slice_dims(viewer.dims, force=False)


def assert_same(ours, theirs, what):
    if ours is None or theirs is None:
        assert ours is theirs, what
        return
    if isinstance(ours, list | tuple) and ours and isinstance(ours[0], str):
        assert list(ours) == list(theirs), what
        return
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs), err_msg=what)


# --- data ---------------------------------------------------------------------------------


def polygons(n: int = 48) -> list[np.ndarray]:
    out = []
    for i in range(n):
        z = i % NZ
        c = RNG.uniform(5, 40, 2)
        k = 3 + i % 4
        ang = np.linspace(0, 2 * np.pi, k, endpoint=False)
        out.append(np.c_[np.full(k, z), c[0] + 3 * np.cos(ang), c[1] + 3 * np.sin(ang)])
    return out


def tracks_data(n_tracks: int = 8, n_t: int = NZ) -> np.ndarray:
    return np.array(
        [[tid, t, *RNG.uniform(0, 40, 2)] for tid in range(n_tracks) for t in range(n_t)]
    )


SHAPE_VIEW = (
    '_displayed',
    'displayed_vertices',
    'displayed_vertices_to_shape_num',
    'displayed_index',
)
MESH_VIEW = ('displayed_triangles', 'displayed_triangles_colors', 'displayed_triangles_to_shape_index')


def shapes_view(layer):
    dv = layer._data_view
    view = {name: getattr(dv, name) for name in SHAPE_VIEW}
    view.update({name: getattr(dv._mesh, name) for name in MESH_VIEW})
    view['slice_key'] = np.asarray(dv.slice_key, dtype=float)
    view['thumbnail'] = layer.thumbnail
    return view


def tracks_view(layer):
    labels, positions = layer.track_labels
    return {
        'current_time': layer.current_time,
        'view_data': layer._view_data,
        'view_graph': layer._view_graph,
        'track_connex': layer.track_connex,
        'labels': labels,
        'label_positions': positions,
        'thumbnail': layer.thumbnail,
    }


def points_view(layer):
    return {
        'view_data': layer._view_data,
        'indices': layer._slicing_state._view_indices,
        'size': layer._slicing_state._view_size,
        'thumbnail': layer.thumbnail,
    }


def vectors_view(layer):
    state = layer._slicing_state
    return {'view_data': state._view_data, 'indices': state._view_indices, 'alphas': state._view_alphas}


def surface_view(layer):
    state = layer._slicing_state
    return {
        'vertices': state._view_vertices,
        'faces': state._view_faces,
        'values': state._view_vertex_values,
    }


CASES = {
    'points': (
        lambda: (RNG.uniform(0, NZ, (200, 3)).round(),),
        Points,
        {'size': 3},
        points_view,
    ),
    'vectors': (
        lambda: (np.stack([RNG.uniform(0, NZ, (60, 3)).round(), RNG.uniform(-1, 1, (60, 3))], axis=1),),
        Vectors,
        {},
        vectors_view,
    ),
    'shapes': (lambda: (polygons(),), Shapes, {'shape_type': 'polygon'}, shapes_view),
    'tracks': (lambda: (tracks_data(),), Tracks, {'tail_length': 3}, tracks_view),
    'surface': (
        lambda: (
            (
                RNG.uniform(0, NZ, (40, 3)).round(),
                RNG.integers(0, 40, (60, 3)),
                RNG.uniform(0, 1, 40),
            ),
        ),
        Surface,
        {},
        surface_view,
    ),
}


@pytest.mark.parametrize('kind', list(CASES))
def test_view_equals_napari_sync_slicing(viewer, qtbot, kind):
    make, layer_type, kwargs, view_of = CASES[kind]
    (data,) = make()
    with viewer.sync_slicing():
        layer = viewer.add_layer(layer_type(data, **kwargs))
    twin = layer_type(data, **kwargs)

    @SETTINGS
    @given(state=dims_states())
    def check(state):
        settle(viewer, qtbot, layer, state, twin)
        ours, theirs = view_of(layer), view_of(twin)
        for name in theirs:
            assert_same(ours[name], theirs[name], f'{kind}.{name} at {state}')

    check()


def test_a_thumbnail_still_to_come_does_not_overwrite_a_synchronous_slice(viewer, qtbot, monkeypatch):
    """A Shapes plane shown while its thumbnail waits (at most 4 a second), then napari's own
    synchronous slicing (as for an ndisplay or dims-order change of Shapes) to another plane:
    waiting for slicing must not put the older plane's thumbnail back over napari's."""
    from napari_async_slicing.components import _applier

    monkeypatch.setattr(_applier, 'THUMBNAIL_INTERVAL_S', 30.0)  # every later thumbnail waits
    with viewer.sync_slicing():
        layer = viewer.add_layer(Shapes(polygons(), shape_type='polygon'))
    slicer = viewer._layer_slicer
    shown = slicer._applier._shown
    for z in (1, 4):  # it starts at plane 2
        viewer.dims.current_step = (z, *viewer.dims.current_step[1:])
        qtbot.waitUntil(lambda z=z: layer in shown and shown[layer].plane[0][0] == z and layer.loaded, timeout=5000)
    assert layer in slicer._applier._thumbnail_due  # plane 4's thumbnail is still to come
    with slicer.force_sync():
        viewer.dims.current_step = (3, *viewer.dims.current_step[1:])  # napari slices plane 3
    napari_s = np.array(layer.thumbnail)
    slicer.wait_until_idle(timeout=5)  # shows the thumbnails still to come
    np.testing.assert_array_equal(layer.thumbnail, napari_s)
    with slicer.force_sync():
        viewer.dims.current_step = (4, *viewer.dims.current_step[1:])
    assert not np.array_equal(layer.thumbnail, napari_s)  # the two planes' thumbnails differ


def test_shapes_and_tracks_slice_off_the_main_thread(viewer, qtbot, monkeypatch):
    with viewer.sync_slicing():
        shapes = viewer.add_shapes(polygons(300), shape_type='polygon')
        tracks = viewer.add_tracks(tracks_data(40, NZ))
    ran_on: dict = {}
    for request_type in (_shapes.ShapesSliceRequest, _tracks.TracksSliceRequest):

        def wrapped(self, _original=request_type.__call__, _name=request_type.__name__):
            ran_on.setdefault(_name, []).append(threading.current_thread().name)
            return _original(self)

        monkeypatch.setattr(request_type, '__call__', wrapped)
    # Small in-memory layers slice inline (NAP-4's "skip the delay"); these count as large.
    monkeypatch.setattr(_slice_api, 'FAST_SLICE_BYTES', 0)
    viewer.dims.current_step = (3, *viewer.dims.current_step[1:])
    viewer._layer_slicer.wait_until_idle(timeout=10)
    assert ran_on['ShapesSliceRequest'][0].startswith('napari-async-slicing'), ran_on
    assert ran_on['TracksSliceRequest'][0].startswith('napari-async-slicing'), ran_on
    assert list(shapes._data_view.slice_key) == [3] and tracks.current_time == 3


def test_shapes_request_is_by_value(viewer, qtbot):
    """Editing the layer after submit changes neither the in-flight request nor what is shown."""
    with viewer.sync_slicing():
        layer = viewer.add_shapes(polygons(), shape_type='polygon')
    viewer.dims.current_step = (2, *viewer.dims.current_step[1:])  # a step: snapshot now cached
    viewer._layer_slicer.wait_until_idle(timeout=10)
    request = _shapes.make_request(layer, viewer.dims)
    before = request().shown
    layer.face_color = 'red'  # napari edits its mesh colours in place
    layer.add_polygons([np.array([[2, 1, 1], [2, 9, 1], [2, 9, 9]])])
    after = request().shown
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])
    # A stale response is not stored as is: the layer shows napari's view of the edited shapes.
    twin = Shapes(layer.data, shape_type=layer.shape_type, face_color='red')
    _shapes.apply(layer, request())
    twin._slice_dims(viewer.dims)
    np.testing.assert_array_equal(
        layer._data_view._mesh.displayed_triangles_colors,
        twin._data_view._mesh.displayed_triangles_colors,
    )


class PluginShapes(Shapes):
    """A plugin-style layer type: not one we slice ourselves, and napari has no async request."""


def test_unknown_layer_types_keep_napari_slicing(viewer, qtbot):
    from napari_async_slicing.layers import _slice

    with viewer.sync_slicing():
        plugin = viewer.add_layer(PluginShapes(polygons(), shape_type='polygon'))
        shapes = viewer.add_shapes(polygons(), shape_type='polygon')
    calls = []
    original = plugin._slice_dims
    plugin._slice_dims = lambda *a, **k: (calls.append(threading.current_thread().name), original(*a, **k))[1]
    viewer.dims.current_step = (4, *viewer.dims.current_step[1:])
    viewer._layer_slicer.wait_until_idle(timeout=10)
    assert calls and calls[-1] == threading.main_thread().name  # napari's own, synchronous path
    assert _slice.is_async_sliceable(shapes, viewer.dims)
    assert not _slice.is_async_sliceable(plugin, viewer.dims)
    assert list(shapes._data_view.slice_key) == [4]  # the other layer was sliced too
    assert list(plugin._data_view.slice_key) == [4]


def test_shapes_selection_highlight_follows_the_slice(viewer, qtbot):
    """A selected shape's interaction box goes away when it leaves the view, as in napari."""
    data = polygons()
    with viewer.sync_slicing():
        layer = viewer.add_shapes(data, shape_type='polygon')
        viewer.dims.current_step = (2, *viewer.dims.current_step[1:])
    twin = Shapes(data, shape_type='polygon')
    twin._slice_dims(viewer.dims)
    on_plane_2 = {i for i, d in enumerate(data) if d[0, 0] == 2}
    layer.selected_data = twin.selected_data = on_plane_2
    for z in (3, 2):
        viewer.dims.current_step = (z, *viewer.dims.current_step[1:])
        viewer._layer_slicer.wait_until_idle(timeout=10)
        twin._slice_dims(viewer.dims)
        assert (layer._selected_box is None) == (twin._selected_box is None) == (z == 3)
        if z == 2:  # corners and centre; the rotation handle depends on the canvas zoom
            assert_same(layer._selected_box[:9], twin._selected_box[:9], 'selected box')


# --- Shapes: what vispy holds ---------------------------------------------------------------


def mixed_shapes():
    """Polygons, paths, lines and ellipses on every plane, with per-shape colours and text."""
    data, types = [], []
    for i, poly in enumerate(polygons(36)):
        z = poly[0, 0]
        data.append(poly)
        types.append('polygon')
        if i % 6 == 0:
            data.append(np.array([[z, 2, 2 + i], [z, 12, 8 + i], [z, 20, 3 + i]]))
            types.append('path')
            data.append(np.array([[z, 30, 1 + i], [z, 44, 6 + i]]))
            types.append('line')
            data.append(np.array([[z, 20, 20], [z, 20, 30], [z, 26, 30], [z, 26, 20]]) + [0, i, 0])
            types.append('ellipse')
    kwargs = {
        'shape_type': types,
        'face_color': RNG.uniform(0, 1, (len(data), 4)),
        'edge_color': RNG.uniform(0, 1, (len(data), 4)),
        'edge_width': 1.5,
        'features': {'n': np.arange(len(data))},
        'text': {'string': '{n}', 'size': 6},
    }
    return data, kwargs


def faces_node(viewer, layer):
    return viewer.window._qt_viewer.canvas.layer_to_visual[layer].node.shape_faces


def vispy_faces(viewer, layer):
    """What vispy holds for the shape faces: the arrays napari hands it, what it draws, its bounds."""
    node = faces_node(viewer, layer)
    mesh = node.mesh_data
    return {
        'vertices': mesh.get_vertices(),
        'faces': mesh.get_faces(),
        'face_colors': mesh.get_face_colors(),
        'drawn_vertices': mesh.get_vertices(indexed='faces'),
        'drawn_colors': mesh.get_face_colors(indexed='faces'),
        'bounds': np.array([node._compute_bounds(ax, None) for ax in range(mesh.get_vertices().shape[1])]),
        'text': viewer.window._qt_viewer.canvas.layer_to_visual[layer].node.text.text,
    }


def napari_vispy_faces(viewer, layer):
    """The same after napari's own ``VispyShapesLayer._on_data_change`` rebuilt it from the layer."""
    viewer.window._qt_viewer.canvas.layer_to_visual[layer]._on_data_change()
    return vispy_faces(viewer, layer)


def step_to(viewer, qtbot, z):
    viewer.dims.current_step = (z, *viewer.dims.current_step[1:])
    slicer = viewer._layer_slicer
    qtbot.waitUntil(lambda: not slicer._scheduler.in_flight(), timeout=10000)
    slicer.wait_until_idle(timeout=10)


def assert_vispy_faces_are_napari(viewer, layer, where):
    ours = vispy_faces(viewer, layer)
    mesh_type = type(faces_node(viewer, layer).mesh_data).__name__
    theirs = napari_vispy_faces(viewer, layer)
    assert type(faces_node(viewer, layer).mesh_data).__name__ == 'MeshData'  # napari's rebuilt it
    for name in theirs:
        assert_same(ours[name], theirs[name], f'{name} {where}')
    return mesh_type


def test_shapes_vispy_mesh_equals_napari(viewer, qtbot):
    """The prepared faces mesh vispy gets is what napari's vispy layer builds, step after step,
    after edits and with a selection; drawn pixels are the same too."""
    data, kwargs = mixed_shapes()
    with viewer.sync_slicing():
        layer = viewer.add_shapes(data, **kwargs)
    twin = Shapes(data, **kwargs)
    used = []
    for z in (1, 4, 2, 5, 0):
        step_to(viewer, qtbot, z)
        twin._slice_dims(viewer.dims)
        assert_same(layer._data_view._mesh.displayed_triangles, twin._data_view._mesh.displayed_triangles, z)
        used.append(assert_vispy_faces_are_napari(viewer, layer, f'at z={z}'))
    assert used.count('ShownMesh') >= 4, used  # the prepared mesh, not napari's handler

    # Edits: a new snapshot, then the prepared path again for later steps.
    layer.add_polygons([np.array([[3, 1, 1], [3, 9, 1], [3, 9, 9]])])
    layer.face_color = 'red'
    layer.selected_data = {0, 1, 2, 3}
    for z in (3, 1, 3):
        step_to(viewer, qtbot, z)
        used.append(assert_vispy_faces_are_napari(viewer, layer, f'after edits at z={z}'))
    assert used[-2:] == ['ShownMesh', 'ShownMesh'], used

    # And the picture: ours, then napari's handler on the same state.
    step_to(viewer, qtbot, 2)
    assert type(faces_node(viewer, layer).mesh_data).__name__ == 'ShownMesh'
    ours = viewer.screenshot(canvas_only=True, flash=False)
    viewer.window._qt_viewer.canvas.layer_to_visual[layer]._on_data_change()
    theirs = viewer.screenshot(canvas_only=True, flash=False)
    assert ours[..., :3].any()
    np.testing.assert_array_equal(ours, theirs)


def test_shapes_2d_in_3d_and_empty_planes_match_napari(viewer, qtbot):
    """A plane without shapes (napari's placeholder triangle) and 2D shapes in a 3D view."""
    data = [p for p in polygons(48) if p[0, 0] != 4]
    with viewer.sync_slicing():
        layer = viewer.add_shapes(data, shape_type='polygon')
    for z in (4, 1):
        step_to(viewer, qtbot, z)
        assert_vispy_faces_are_napari(viewer, layer, f'z={z}')
    viewer.layers.clear()
    with viewer.sync_slicing():
        flat = viewer.add_shapes([p[:, 1:] for p in polygons(12)], shape_type='polygon')
        viewer.dims.ndisplay = 3
    flat.refresh()
    viewer._layer_slicer.wait_until_idle(timeout=10)
    assert faces_node(viewer, flat).mesh_data.get_vertices().shape[1] == 3
    assert_vispy_faces_are_napari(viewer, flat, '2D shapes in 3D')


def test_shapes_edit_between_submit_and_apply_falls_back_to_napari(viewer, qtbot):
    """A response computed before an edit is not shown as is: napari builds the view and the mesh."""
    data, kwargs = mixed_shapes()
    with viewer.sync_slicing():
        layer = viewer.add_shapes(data, **kwargs)
    step_to(viewer, qtbot, 2)
    request = _shapes.make_request(layer, viewer.dims)
    response = request()
    assert type(response.mesh).__name__ == 'ShownMesh'
    layer.face_color = 'blue'  # edits napari's mesh colours: the snapshot is replaced
    _shapes.apply(layer, response)
    mesh = faces_node(viewer, layer).mesh_data
    assert type(mesh).__name__ == 'MeshData'  # napari's own handler built it
    blue = np.all(mesh.get_face_colors() == [0, 0, 1, 1], axis=1)
    assert blue.any() and not np.all(response.mesh.get_face_colors() == [0, 0, 1, 1], axis=1).any()
    assert_vispy_faces_are_napari(viewer, layer, 'after the fallback')
