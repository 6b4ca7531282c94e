"""Layer types napari 0.9 slices synchronously (Shapes, Tracks).

Our own requests for these (``layers._slice._shapes`` / ``_tracks``) need the layer's slice input
and a few of its private fields; every such name is read or written here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari.layers import Layer


def make_slice_input(layer: Layer, dims: Any) -> Any:
    """The ``_SliceInput`` napari's sync path would store for ``dims`` (by value)."""
    return layer._slicing_state.make_slice_input(dims)


def data_point(layer: Layer, slice_input: Any, dims: Any) -> Any:
    """The slice point in data coordinates (napari's ``_slice_indices(...).point``)."""
    return layer._slicing_state._slice_indices(slice_input, dims).point


def set_slice_input(layer: Layer, slice_input: Any, units: Any) -> None:
    """What ``set_slice_input_from_dims`` stores, without napari's synchronous ``set_view_slice``."""
    state = layer._slicing_state
    state._slice_input = slice_input
    state._units = units


def current_slice_input(layer: Layer) -> Any:
    return layer._slicing_state._slice_input


def shape_list(layer: Any) -> Any:
    """A Shapes layer's ``ShapeList`` (``_data_view``)."""
    return layer._data_view


def shapes_view_state(layer: Any) -> tuple[int, Any]:
    """(ndisplay, dims order) the Shapes layer's ``ShapeList`` is currently built for."""
    return layer._ndisplay_stored, layer._display_order_stored


def watch_shape_list(shape_list: Any, changed: Callable[[], None]) -> None:
    """Call ``changed`` whenever napari recomputes what a ``ShapeList`` displays.

    napari calls ``ShapeList._update_displayed`` after every edit of shapes, colours, z order,
    ndisplay or dims order, so it marks every change of the data our snapshots copy.
    """
    if getattr(shape_list, '_async_slicing_watched', False):
        return
    original = shape_list._update_displayed

    def _update_displayed() -> None:
        changed()
        original()

    shape_list._update_displayed = _update_displayed
    shape_list._async_slicing_watched = True


def shape_list_arrays(shape_list: Any) -> dict[str, Any]:
    """The ``ShapeList`` / ``Mesh`` arrays a slice of a Shapes layer is computed from (copies)."""
    mesh = shape_list._mesh
    return {
        'triangles': mesh.triangles.copy(),
        'triangles_z_order': mesh.triangles_z_order.copy(),
        'triangles_index': mesh.triangles_index.copy(),
        'triangles_colors': mesh.triangles_colors.copy(),
        'mesh_vertices': mesh.vertices.copy(),
        'vertices': shape_list._vertices.copy(),
        'vertices_index': shape_list._vertices_index.copy(),
        'z_order': shape_list._z_order.copy(),
        'face_color': np.array(shape_list._face_color, copy=True),
        'edge_color': np.array(shape_list._edge_color, copy=True),
    }


def set_shapes_displayed(layer: Any, slice_key: list, shown: dict[str, Any]) -> None:
    """Store a precomputed view of a Shapes layer (what ``ShapeList._update_displayed`` sets)."""
    data_view = layer._data_view
    data_view._slice_key = slice_key
    data_view._clear_cache()
    data_view._displayed = shown['displayed']
    mesh = data_view._mesh
    mesh.displayed_triangles = shown['displayed_triangles']
    mesh.displayed_triangles_to_shape_index = shown['displayed_triangles_to_shape_index']
    mesh.displayed_triangles_colors = shown['displayed_triangles_colors']
    data_view.displayed_vertices = shown['displayed_vertices']
    data_view.displayed_vertices_to_shape_num = shown['displayed_vertices_to_shape_num']
    data_view.displayed_index = shown['displayed_index']


def vispy_shapes_layers(layer: Any) -> list:
    """napari's vispy layers drawing ``layer`` (exactly ``VispyShapesLayer``; one per viewer).

    Found as the listeners of the layer's ``set_data`` event (``VispyBaseLayer`` connects its
    ``_on_data_change``), so no viewer is needed. Subclasses are left out: they keep napari's
    handler.
    """
    from napari._vispy.layers.shapes import VispyShapesLayer

    found = []
    for callback in layer.events.set_data.callbacks:
        if isinstance(callback, tuple) and callback[1] == '_on_data_change':
            owner = callback[0]()
            if type(owner) is VispyShapesLayer:
                found.append(owner)
    return found


def shapes_set_data_with_mesh(layer: Any, vispy_layers: list, mesh: Any) -> None:
    """``layer.events.set_data()`` with a prepared vispy ``MeshData`` for the shape faces.

    For each of ``vispy_layers`` this does what ``VispyShapesLayer._on_data_change`` does (faces
    mesh, transform, text, node update), except that the mesh arrays were computed beforehand
    (:mod:`layers._slice._shapes`, on a worker); that handler is then blocked while the event
    reaches every other listener.
    """
    handlers = []
    for vispy_layer in vispy_layers:
        vispy_layer.node.shape_faces.set_data(meshdata=mesh)
        vispy_layer._on_matrix_change()
        vispy_layer._update_text(update_node=False)
        vispy_layer.node.update()
        handlers.append(vispy_layer._on_data_change)
    emitter = layer.events.set_data
    for handler in handlers:
        emitter.block(handler)
    try:
        emitter()
    finally:
        for handler in handlers:
            emitter.unblock(handler)


def shapes_view_changed(layer: Any) -> None:
    """The rest of ``Shapes._set_view_slice`` when the shapes in view changed."""
    layer._value = (None, None)
    layer._outlines_cache.clear()
    layer._selected_box = layer.interaction_box(layer._selected_data_in_view)


def shapes_thumbnail_allowed(layer: Any) -> bool:
    return layer._is_moving is False and layer._allow_thumbnail_update is True


def shapes_max_thumbnail(layer: Any) -> int:
    return layer._max_shapes_thumbnail


def shape_bounding_box(shape: Any) -> Any:
    return shape._bounding_box


def set_highlight(layer: Any, force: bool) -> None:
    """napari's highlight refresh; unforced it redraws only if selection/hover/drag box changed."""
    layer._set_highlight(force=force)


def sync_set_view_slice(layer: Any) -> None:
    """napari's own (synchronous) view update for the layer's stored slice input."""
    layer._slicing_state.set_view_slice()


def track_manager(layer: Any) -> Any:
    return layer._manager


def tracks_displayed_dims(layer: Any) -> Any:
    return layer._slicing_state._current_displayed_dims


def tracks_set_displayed_dims(layer: Any, displayed: Any) -> None:
    """Store the displayed dims and rebuild the track/graph buffers (napari's ``slice_done``)."""
    state = layer._slicing_state
    state._current_displayed_dims = displayed
    state.slice_done()


def tracks_max_thumbnail(layer: Any) -> int:
    return layer._max_tracks_thumbnail
