"""Every use of a napari (and zarr) private name lives in this module.

napari 0.9 has no public slicing API, so installing our slicer means touching a few private seams.
Keeping them here means a napari upgrade touches one file. Each function says which seam it uses.

Seams (napari 0.9.2):
- ``ViewerModel._layer_slicer``: a pydantic private attribute whose default factory is napari's
  ``_LayerSlicer``; we swap the factory so every new viewer gets our slicer.
- ``QtViewer.__init__`` connects ``_layer_slicer.events.ready`` to ``QtViewer._on_slice_ready``
  (which applies responses); for our slicer we disconnect it and apply on the main thread ourselves.
- ``Layer._slicing_state``: ``_make_slice_request``, ``_update_slice_response``,
  ``_set_unloaded_slice_id``, ``_update_loaded_slice_id``, ``loaded_data``; ``Layer._slice_dims``,
  ``Layer._refresh_sync``.
- ``QtViewer._screenshot`` calls ``wait_until_idle``; ``Window._screenshot`` does not wait.
- zarr: ``zarr.core.sync._get_loop`` (the event loop zarr's sync API runs on).
- ``VispyCanvas._clean_and_update_scenegraph`` (layer removal): wrapped to make the canvas's GL
  context current first (a napari 0.9.2 crash; see ``canvas_current_on_layer_removal``, issue 8).
- ``QtLayerListModel.data`` / ``LoadedRole``: the layer list's delayed loading cue.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari.layers import Layer

# --- viewers -----------------------------------------------------------------------------


def layer_slicer(viewer: Any) -> Any:
    """The slicer a viewer (``Viewer`` or ``ViewerModel``) uses."""
    return viewer._layer_slicer


def napari_on_slice_ready(viewer: Any, layer: Any, response: Any) -> None:
    """napari's own main-thread apply (``QtViewer._on_slice_ready``), for comparing with ours."""
    import weakref
    from types import SimpleNamespace

    viewer.window._qt_viewer._on_slice_ready(SimpleNamespace(value={weakref.ref(layer): response}))


def render_canvas(viewer: Any) -> None:
    """Draw the viewer's canvas now (uploads pending textures to the GPU)."""
    viewer.window._qt_viewer.canvas._scene_canvas.render()


def update_canvas(viewer: Any) -> None:
    """Ask the viewer's canvas to repaint at the next frame (nothing else changes)."""
    viewer.window._qt_viewer.canvas._scene_canvas.update()


def main_window_of(viewer: Any) -> Any:
    """The ``QMainWindow`` of a shown viewer (for its geometry and docks)."""
    return viewer.window._qt_window


def canvas_widget_of(viewer: Any) -> Any:
    """The Qt widget vispy draws the viewer's canvas in."""
    return viewer.window._qt_viewer.canvas.native


def close_notifications(viewer: Any) -> None:
    """Close the notification toasts shown over the viewer's canvas (before a screenshot)."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in main_window_of(viewer).findChildren(NapariQtNotification):
        toast.close()


def vispy_node(viewer: Any, layer: Any) -> Any:
    """The vispy node napari hands a layer's sliced data to (for measuring what is shown)."""
    return viewer.window._qt_viewer.layer_to_visual[layer].node


def _canvas_current_first(original: Callable[[Any], None], applies: Callable[[Any], bool]) -> Any:
    """napari's layer-removal GL clean-up, with the canvas's GL context made current first."""

    @functools.wraps(original)
    def clean_and_update_scenegraph(self: Any) -> None:
        scene_canvas = getattr(self, '_scene_canvas', None)
        if scene_canvas is not None and applies(self):
            try:
                scene_canvas.set_current()
            except AttributeError:  # the canvas is closing (no backend left): as napari's own finish
                pass
        original(self)

    return clean_and_update_scenegraph


@contextmanager
def canvas_current_on_layer_removal() -> Iterator[None]:
    """Inside the block, napari makes a canvas's GL context current before it cleans up a removed
    layer, in every viewer (:func:`patch_napari` does it for viewers using our slicer).

    A workaround for a napari 0.9.2 crash (issue 8): on layer removal napari's
    ``VispyCanvas._clean_and_update_scenegraph`` runs ``gc.collect()`` and ``context.finish()``,
    which executes vispy's queued GL commands (deleting the layer's textures, buffers and program,
    ``glFinish``) outside ``paintGL`` without making the canvas's context current: whichever
    context Qt last used is current (Qt's compositing context, in the same share group). Qt
    requires ``makeCurrent()`` before GL calls outside ``paintGL``. Under Mesa llvmpipe a later
    draw then segfaults in ``glDrawArrays`` once the layer churn hits the wrong state; with the
    canvas made current first it does not.
    """
    from napari._vispy.canvas import VispyCanvas

    original = VispyCanvas.__dict__.get('_clean_and_update_scenegraph')
    if original is None:  # napari changed: nothing to work around here
        yield
        return
    VispyCanvas._clean_and_update_scenegraph = _canvas_current_first(original, lambda _: True)
    try:
        yield
    finally:
        VispyCanvas._clean_and_update_scenegraph = original


# --- layers ------------------------------------------------------------------------------


def slicing_state(layer: Layer) -> Any:
    return layer._slicing_state


def is_async_sliceable(layer: Any) -> bool:
    """True if napari can build a by-value slice request for this layer."""
    state = getattr(layer, '_slicing_state', None)
    return state is not None and all(
        hasattr(state, name)
        for name in (
            '_make_slice_request',
            '_update_slice_response',
            '_set_unloaded_slice_id',
        )
    )


def make_slice_request(layer: Layer, dims: Any) -> Any:
    return layer._slicing_state._make_slice_request(dims)


def mark_unloaded(layer: Layer, request_id: int) -> None:
    layer._slicing_state._set_unloaded_slice_id(request_id)


def set_newest_slice_id(layer: Layer, request_id: int) -> None:
    """Make ``request_id`` the layer's newest without turning its loading state on."""
    layer._slicing_state._last_slice_id = request_id


def mark_loaded(layer: Layer, request_id: int) -> None:
    """Napari's rule: the layer is loaded once the newest request it knows of is done."""
    layer._slicing_state._update_loaded_slice_id(request_id)


def update_slice_response(layer: Layer, response: Any) -> None:
    layer._slicing_state._update_slice_response(response)


def refresh_after_apply(layer: Layer) -> None:
    """What napari's ``QtViewer._on_slice_ready`` does after updating the slice state."""
    events = getattr(layer, 'events', None)
    if events is not None and hasattr(events, 'set_data'):
        events.set_data()
    refresh = getattr(layer, '_refresh_sync', None)
    if refresh is not None:
        refresh(data_displayed=False, thumbnail=True, highlight=True, extent=False)


def slice_dims_sync(layer: Layer, dims: Any, force: bool) -> None:
    """napari's synchronous slicing path (also used for layers it cannot slice async)."""
    layer._slice_dims(dims=dims, force=force)


def reference_slice(layer: Layer, dims: Any) -> Layer:
    """A copy of ``layer`` (same data and state) sliced by napari's own synchronous path.

    What napari would show for this state: the reference our slicer is checked against.
    """
    from napari.layers import Layer as _Layer

    data, meta, layer_type = layer.as_layer_data_tuple()
    copy = _Layer.create(data, meta, layer_type)
    # napari slices a visible layer when its slice input changes (``force`` skips slicing).
    if not copy._slicing_state.set_slice_input_from_dims(dims, False):
        copy.set_view_slice()
    return copy


def displayed_slice(layer: Layer) -> Any:
    """What a sliced Image/Labels layer hands to vispy (``layer._slice.image.view``)."""
    return layer._slice.image.view


def loaded_signal(layer: Layer) -> Any | None:
    """The psygnal signal napari emits when ``layer.loaded`` changes (never forwarded in 0.9.2)."""
    state = getattr(layer, '_slicing_state', None)
    return getattr(state, 'loaded_data', None)


def data_arrays(layer: Layer) -> list[Any]:
    """The arrays a layer reads: ``layer.data``, or each level of multiscale data."""
    data = getattr(layer, 'data', None)
    if data is None:
        return []
    if getattr(layer, 'multiscale', False):
        return list(data)
    return [data]


# --- dims ----------------------------------------------------------------------------------


def detached_dims(dims: Any) -> Any:
    """A copy of a ``Dims`` model with its own events (``Dims.copy`` shares the emitters), to
    build neighbour-plane requests without touching the viewer's dims."""
    from napari.components import Dims

    dump = dims.model_dump() if hasattr(dims, 'model_dump') else dims.dict()
    return Dims(**dump)


def dims_signature(dims: Any, with_step: bool = False) -> tuple:
    """What a slice of ``dims`` depends on: everything but the step (``with_step``: and the
    step and point too)."""
    signature = (
        dims.ndim,
        dims.ndisplay,
        tuple(dims.order),
        tuple(dims.range),
        tuple(dims.margin_left),
        tuple(dims.margin_right),
    )
    if with_step:
        signature += (tuple(dims.current_step), tuple(dims.point))
    return signature


def dims_nsteps(dims: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in dims.nsteps)


def default_scrub_axis(dims: Any) -> int | None:
    """The slider a user most likely moves next: the innermost non-displayed axis."""
    axes = tuple(dims.not_displayed)
    return axes[-1] if axes else None


def next_request_id() -> int:
    from napari.layers.base._slice import _next_request_id

    return _next_request_id()


# --- Image and Labels (scalar fields) -----------------------------------------------------
# What napari computes on the main thread when a slice arrives, split so the O(N) parts can run on
# a worker: ``ScalarFieldSlicingState._update_slice_response`` (converts with
# ``layer._raw_to_displayed``), ``_ImageSlicingState._update_slice_response`` (auto-contrast from
# the slice), ``_update_thumbnail`` (``layer._thumbnail_shape``), vispy's ``fix_data_dtype``.


def scalar_field_response_class() -> type:
    from napari.layers._scalar_field._slice import _ScalarFieldSliceResponse

    return _ScalarFieldSliceResponse


def scalar_field_view(raw: Any, view: Any) -> Any:
    from napari.layers._scalar_field._slice import _ScalarFieldView

    return _ScalarFieldView(raw=raw, view=view)


# --- progressive multiscale (napari's multiscale request, read in two parts) -------------------


def has_coarser_thumbnail(request: Any) -> bool:
    """A 2D multiscale request whose thumbnail level is coarser than its data level.

    napari reads the data level and then the thumbnail level (the coarsest) for every step; the
    coarse plane can be read at the same time and shown first.
    """
    return (
        bool(getattr(request, 'multiscale', False))
        and request.slice_input.ndisplay == 2
        and request.thumbnail_level != request.data_level
        and not request._slice_out_of_bounds()
    )


def thumbnail_plane(request: Any) -> Any:
    """What napari's multiscale request reads at the thumbnail level (projected, not transposed)."""
    data_slice = request._thick_slice_at_level(request.thumbnail_level)
    return request._project_thick_slice(request.data_at_thumbnail_level, data_slice)


def thumbnail_level_index(request: Any) -> tuple[Any, tuple]:
    """The thumbnail-level data of a 2D multiscale request and napari's index into it: ints (a
    point) or slices (a thick slice, projected) on the axes not displayed."""
    data_slice = request._thick_slice_at_level(request.thumbnail_level)
    if request.projection_mode == 'none':
        index = request._point_to_slices(data_slice.point)
    else:
        index = request._data_slice_to_slices(data_slice, request.slice_input.displayed)
    return request.data_at_thumbnail_level, index


def layer_axis(layer: Layer, world_axis: int, ndim_world: int) -> int | None:
    """The layer's data axis for a world (dims) axis, or None if the layer does not have it
    (napari aligns a layer's axes with the last ones of the world: ``_world_to_layer_dims``)."""
    axis = world_axis - (ndim_world - layer.ndim)
    return axis if 0 <= axis < layer.ndim else None


def coarse_response(request: Any, plane: Any) -> Any:
    """napari's response for ``request`` showing the thumbnail-level ``plane`` over the whole field.

    The same plane napari uses as the thumbnail, placed as a tile of the thumbnail level (its
    ``tile2data`` scales by that level's downsampling, no crop).
    """
    from napari.layers._scalar_field._slice import _ScalarFieldSliceResponse, _ScalarFieldView
    from napari.utils.transforms import Affine

    ndim = request.slice_input.ndim
    scale = np.ones(ndim)
    for d in request.slice_input.displayed:
        scale[d] = request.downsample_factors[request.thumbnail_level][d]
    view = _ScalarFieldView.from_view(np.transpose(plane, request._get_order()))
    return _ScalarFieldSliceResponse(
        image=view,
        thumbnail=view,
        tile_to_data=Affine(name='tile2data', scale=scale, translate=np.zeros(ndim), ndim=ndim),
        slice_input=request.slice_input,
        request_id=request.id,
    )


def tile_to_data_scale(layer: Layer) -> Any:
    """The scale of the layer's ``tile2data`` transform (the shown level's downsampling)."""
    return layer._transforms['tile2data'].scale


def has_single_level(request: Any) -> bool:
    """A 2D single-scale request for a plane that is in bounds (it could show a coarser level)."""
    return (
        not getattr(request, 'multiscale', True)
        and request.slice_input.ndisplay == 2
        and not request._slice_out_of_bounds()
    )


def as_coarse_level_request(request: Any, coarse: Any, factors: tuple[float, ...]) -> Any:
    """``request`` (single-scale) read from ``coarse``, a level downsampled by ``factors``.

    Built as napari's multiscale request over two levels (the data and ``coarse``) showing all of
    ``coarse``: napari's own code then maps the step to the coarse level and places its plane
    (``tile2data`` scales by ``factors``).
    """
    ndim = request.slice_input.ndim
    shapes = np.array([request.data_at_data_level.shape, coarse.shape])
    corners = np.zeros((2, ndim), dtype=int)
    corners[1] = shapes[1] - 1
    return dataclasses.replace(
        request,
        data_at_data_level=coarse,
        data_at_thumbnail_level=coarse,
        multiscale=True,
        data_level=1,
        thumbnail_level=1,
        level_shapes=shapes,
        downsample_factors=np.array([np.ones(ndim), factors]),
        corner_pixels=corners,
    )


def reusing_thumbnail_plane(request_class: type) -> type:
    """A subclass of napari's request class that takes its thumbnail-level plane from a future.

    Its ``thumbnail_future`` field (when set) holds :func:`thumbnail_plane` of the request, read
    beside the data level; napari's own code then assembles the response around it.
    """

    class ReusingThumbnailPlane(request_class):
        def _project_thick_slice(self, data: Any, data_slice: Any) -> Any:
            future = getattr(self, 'thumbnail_future', None)
            if future is not None and data is self.data_at_thumbnail_level:
                return future.result()
            return super()._project_thick_slice(data, data_slice)

    ReusingThumbnailPlane.__qualname__ = ReusingThumbnailPlane.__name__ = request_class.__name__
    return ReusingThumbnailPlane


def set_slice_without_conversion(layer: Layer, response: Any) -> None:
    """napari's generic ``ScalarFieldSlicingState._update_slice_response`` (no Image auto-contrast).

    ``response.to_displayed`` is called by it; a response whose view is already displayable
    returns itself there.
    """
    from napari.layers._scalar_field.scalar_field import ScalarFieldSlicingState

    ScalarFieldSlicingState._update_slice_response(layer._slicing_state, response)


def thumbnail_shape(layer: Layer) -> tuple[int, ...]:
    return tuple(layer._thumbnail_shape)


#: Texture-ready arrays made on a worker, by the id of the slice view napari's vispy layer casts.
_textures: dict[int, tuple[weakref.ReferenceType, Any]] = {}


def prepare_texture(view: Any, texture: Any) -> None:
    """Main thread: when napari's vispy layer casts ``view`` for upload, it gets ``texture``
    (the same cast, made on a worker) instead; the layer's slice keeps napari's own view."""
    if texture is view:
        return
    key = id(view)
    _textures[key] = (weakref.ref(view, lambda _ref, key=key: _textures.pop(key, None)), texture)


def _prepared_texture_first(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(original)
    def fix_data_dtype(data: Any) -> Any:
        entry = _textures.get(id(data))
        if entry is not None and entry[0]() is data:
            return entry[1]
        return original(data)

    return fix_data_dtype


def texture_dtype_data(data: Any) -> Any:
    """vispy's dtype fix napari applies in ``VispyScalarFieldBaseLayer._on_data_change``."""
    from napari._vispy.utils.gl import fix_data_dtype

    return fix_data_dtype(data)


def contrast_coercion(contrast_limits: Any) -> Any | None:
    """How ``Image._raw_to_displayed`` rescales data for these limits (None: data passes as is)."""
    from napari.utils.colormaps.colormap_utils import _coerce_contrast_limits

    coerced = _coerce_contrast_limits(contrast_limits)
    # np.allclose (as napari tests it), without its per-call overhead: this runs at every submit.
    if all(
        abs(float(a) - float(b)) <= 1e-8 + 1e-5 * abs(float(b))
        for a, b in zip(coerced.contrast_limits, contrast_limits, strict=True)
    ):
        return None
    return coerced


def should_calc_clims(layer: Layer) -> bool:
    """Image: contrast limits and their range are still to be set from the first slice."""
    return bool(getattr(layer, '_should_calc_clims', False))


def clear_should_calc_clims(layer: Layer) -> None:
    layer._should_calc_clims = False


def auto_contrast_source(layer: Layer) -> str:
    return layer._auto_contrast_source


def labels_displayed(raw: Any, contour: int, colormap: Any) -> Any:
    """``Labels._raw_to_displayed`` for a whole slice, with the layer's settings passed by value."""
    from napari.layers.labels._labels_utils import get_contours

    labels = raw
    if contour >= 1 and raw.ndim <= 2:
        labels = get_contours(raw, contour, colormap.background_value)
    return colormap._data_to_texture(labels)


# --- layer types napari slices synchronously (Shapes, Tracks) ---------------------------------
# Our own requests for these (``layers._slice._shapes`` / ``_tracks``) need the layer's slice input
# and a few of its private fields; every such name is read or written here.


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


# --- zarr --------------------------------------------------------------------------------


def zarr_event_loop() -> Any:
    """The asyncio loop zarr's synchronous API runs its coroutines on."""
    from zarr.core.sync import _get_loop

    return _get_loop()


# --- installing into napari ----------------------------------------------------------------

_saved: dict[str, Any] = {}


def _viewer_model_slicer_attr() -> Any:
    from napari.components import ViewerModel

    return ViewerModel.__private_attributes__['_layer_slicer']


def install(slicer_factory: Callable[[], Any], slicer_type: type) -> None:
    """Make every new viewer use ``slicer_factory`` and patch the Qt seams for ``slicer_type``."""
    patch_napari(slicer_type)
    _saved['factory_attr'].default_factory = slicer_factory


def patch_napari(slicer_type: type) -> None:
    """Patch napari's classes for viewers that use ``slicer_type`` (idempotent).

    The patches only act on viewers whose slicer is a ``slicer_type``; viewers with napari's own
    slicer are untouched. New viewers keep napari's slicer unless :func:`install` is called.
    """
    if _saved:
        return
    from napari._qt.containers.qt_layer_model import QtLayerListModel
    from napari._qt.qt_main_window import Window
    from napari._qt.qt_viewer import QtViewer
    from napari._vispy.canvas import VispyCanvas
    from napari.components import ViewerModel
    from napari.layers import Layer
    from napari.viewer import Viewer

    attr = _viewer_model_slicer_attr()
    _saved.update(
        factory_attr=attr,
        factory=attr.default_factory,
        qtviewer_init=QtViewer.__init__,
        window_screenshot=Window._screenshot,
        viewer_screenshot=Viewer.screenshot,
        window_public_screenshot=Window.screenshot,
        layer_refresh=Layer.refresh,
        layer_construct=type(Layer).__call__,
        on_add_layer=ViewerModel._on_add_layer,
        on_remove_layer=ViewerModel._on_remove_layer,
        labels_get_dtype=_labels_utils().get_dtype,
        layer_model_data=QtLayerListModel.data,
        canvas_clean_up=VispyCanvas.__dict__.get('_clean_and_update_scenegraph'),
        fix_data_dtype=_vispy_scalar_field().fix_data_dtype,
        had_sync_slicing='sync_slicing' in ViewerModel.__dict__,
    )

    orig_init = _saved['qtviewer_init']

    @functools.wraps(orig_init)
    def qtviewer_init(self: Any, viewer: Any, *args: Any, **kwargs: Any) -> None:
        orig_init(self, viewer, *args, **kwargs)
        slicer = viewer._layer_slicer
        if isinstance(slicer, slicer_type):
            connect_slicer(viewer, slicer, self)

    QtViewer.__init__ = qtviewer_init

    orig_window_screenshot = _saved['window_screenshot']

    @functools.wraps(orig_window_screenshot)
    def window_screenshot(self: Any, *args: Any, **kwargs: Any) -> Any:
        # napari only waits for slicing on canvas-only screenshots; wait for whole-window ones too.
        slicer = self._qt_viewer.viewer._layer_slicer
        if isinstance(slicer, slicer_type) and not kwargs.get('canvas_only', False):
            slicer.wait_until_idle(timeout=slicer.screenshot_timeout)
        return orig_window_screenshot(self, *args, **kwargs)

    Window._screenshot = window_screenshot

    Viewer.screenshot = _with_wait_keyword(_saved['viewer_screenshot'], lambda v: v)
    Window.screenshot = _with_wait_keyword(
        _saved['window_public_screenshot'], lambda w: w._qt_viewer.viewer
    )

    orig_refresh = _saved['layer_refresh']

    @functools.wraps(orig_refresh)
    def layer_refresh(self: Any, event: Any = None, **kwargs: Any) -> None:
        slicer = managing_slicer(self)
        if slicer is None and _constructing.depth and not _in_memory_data(self):
            # Deferred first render: a new layer over lazy (remote) data is not sliced at
            # construction (napari would read plane 0 on the main thread); the viewer slices it,
            # at the step dims asks for, once it is added.
            self._refresh_sync(extent=kwargs.get('extent', True), force=True)
            return None
        if (
            slicer is None
            or not kwargs.get('data_displayed', True)
            or self._refresh_blocked
            or slicer._force_sync
        ):
            return orig_refresh(self, event, **kwargs)
        # Route data refreshes through the slicer (as napari's async path does) so a
        # synchronous main-thread slice never races an in-flight response.
        if kwargs.get('extent', True):
            # A user's ``layer.refresh()`` says the data changed; napari's own view updates
            # (multiscale level, contrast) pass ``extent=False`` and keep the chunk cache.
            slicer.data_changed(self)
        self._refresh_sync(extent=kwargs.get('extent', True), force=True)
        self.events.reload(layer=self)
        return None

    Layer.refresh = layer_refresh

    orig_construct = _saved['layer_construct']

    def layer_construct(cls: Any, *args: Any, **kwargs: Any) -> Any:
        # napari's layer metaclass runs ``_post_init`` (which refreshes = slices) after __init__.
        _constructing.depth += 1
        try:
            return orig_construct(cls, *args, **kwargs)
        finally:
            _constructing.depth -= 1

    type(Layer).__call__ = layer_construct

    orig_on_add_layer = _saved['on_add_layer']

    @functools.wraps(orig_on_add_layer)
    def on_add_layer(self: Any, event: Any) -> None:
        # napari slices a new layer at the current dims, then (first layer) moves dims to the
        # centre: start reads only once dims have settled, so plane 0 is never requested.
        slicer = self._layer_slicer
        if not isinstance(slicer, slicer_type):
            return orig_on_add_layer(self, event)
        # Route the layer's refreshes through our slicer from now on: napari's first canvas
        # draw after the dims sliders change refreshes (slices) multiscale layers.
        manage(event.value, slicer)
        with slicer.deferred():
            return orig_on_add_layer(self, event)

    ViewerModel._on_add_layer = on_add_layer

    orig_on_remove_layer = _saved['on_remove_layer']

    @functools.wraps(orig_on_remove_layer)
    def on_remove_layer(self: Any, event: Any) -> None:
        # A layer that leaves the viewer keeps nothing of ours: reads stopped, callbacks off.
        orig_on_remove_layer(self, event)
        slicer = self._layer_slicer
        if isinstance(slicer, slicer_type) and not slicer.is_shut_down:
            slicer.forget(event.value)

    ViewerModel._on_remove_layer = on_remove_layer

    _patch_labels_get_dtype(_labels_dtype)

    orig_model_data = _saved['layer_model_data']
    loaded_role = _loaded_role()

    @functools.wraps(orig_model_data)
    def layer_model_data(self: Any, index: Any, *args: Any, **kwargs: Any) -> Any:
        value = orig_model_data(self, index, *args, **kwargs)
        role = args[0] if args else kwargs.get('role')
        if role == loaded_role and not value and index.isValid():
            from napari_async_slicing._qt._loading_cue import hides_cue

            # The loading spinner of layers our slicer manages waits for loads that last.
            layer = self.getItem(index)
            if managing_slicer(layer) is not None and hides_cue(self, layer):
                return True
        return value

    QtLayerListModel.data = layer_model_data

    if _saved['canvas_clean_up'] is not None:
        # napari 0.9.2 crash on layer removal (issue 8, see canvas_current_on_layer_removal).
        VispyCanvas._clean_and_update_scenegraph = _canvas_current_first(
            _saved['canvas_clean_up'],
            lambda canvas: isinstance(getattr(canvas.viewer, '_layer_slicer', None), slicer_type),
        )

    _vispy_scalar_field().fix_data_dtype = _prepared_texture_first(_saved['fix_data_dtype'])

    if not _saved['had_sync_slicing']:
        from napari_async_slicing._sync import sync_slicing

        ViewerModel.sync_slicing = sync_slicing


def _with_wait_keyword(
    method: Callable[..., Any], viewer_of: Callable[[Any], Any]
) -> Callable[..., Any]:
    """Add ``wait_for_slices=True`` to a screenshot method (False takes it without waiting)."""

    @functools.wraps(method)
    def screenshot(self: Any, *args: Any, wait_for_slices: bool = True, **kwargs: Any) -> Any:
        slicer = viewer_of(self)._layer_slicer
        if wait_for_slices or not hasattr(slicer, 'no_wait'):
            return method(self, *args, **kwargs)
        with slicer.no_wait():
            return method(self, *args, **kwargs)

    return screenshot


def _loaded_role() -> int:
    from napari._qt.containers.qt_layer_model import LoadedRole

    return LoadedRole


def layer_list_loading_cue(viewer: Any, layer: Any) -> bool:
    """Whether the viewer's layer list paints ``layer`` as loading (its spinner) right now."""
    model = viewer.window._qt_viewer.layers.model().sourceModel()
    index = model.index(model._root.index(layer))
    return not model.data(index, _loaded_role())


def layer_model_loaded_changed(model: Any, layer: Any) -> None:
    """Tell napari's layer list ``model`` that ``layer``'s loaded state changed (repaint it)."""
    try:
        row = model._root.index(layer)
    except ValueError:  # no longer in the list
        return
    index = model.index(row)
    try:
        model.dataChanged.emit(index, index, [_loaded_role()])
    except RuntimeError:  # the model's Qt object is gone (viewer closed)
        pass


def uninstall() -> None:
    """Undo :func:`install`: new viewers get napari's own slicer again."""
    if not _saved:
        return
    from napari._qt.qt_main_window import Window
    from napari._qt.qt_viewer import QtViewer
    from napari.components import ViewerModel
    from napari.layers import Layer
    from napari.viewer import Viewer

    _saved['factory_attr'].default_factory = _saved['factory']
    QtViewer.__init__ = _saved['qtviewer_init']
    Window._screenshot = _saved['window_screenshot']
    Viewer.screenshot = _saved['viewer_screenshot']
    Window.screenshot = _saved['window_public_screenshot']
    Layer.refresh = _saved['layer_refresh']
    type(Layer).__call__ = _saved['layer_construct']
    ViewerModel._on_add_layer = _saved['on_add_layer']
    ViewerModel._on_remove_layer = _saved['on_remove_layer']
    _patch_labels_get_dtype(_saved['labels_get_dtype'])
    from napari._qt.containers.qt_layer_model import QtLayerListModel

    QtLayerListModel.data = _saved['layer_model_data']
    if _saved['canvas_clean_up'] is not None:
        from napari._vispy.canvas import VispyCanvas

        VispyCanvas._clean_and_update_scenegraph = _saved['canvas_clean_up']
    _vispy_scalar_field().fix_data_dtype = _saved['fix_data_dtype']
    if not _saved['had_sync_slicing'] and 'sync_slicing' in ViewerModel.__dict__:
        delattr(ViewerModel, 'sync_slicing')
    _saved.clear()


def _vispy_scalar_field() -> Any:
    from napari._vispy.layers import scalar_field

    return scalar_field


def _labels_utils() -> Any:
    from napari.layers.labels import _labels_utils

    return _labels_utils


def _labels_dtype(layer: Any) -> Any:
    """The Labels layer's dtype from metadata (napari 0.9.2's ``get_dtype`` reads plane 0 for it)."""
    dtype = getattr(layer.data, 'dtype', None)
    return dtype if dtype is not None else _saved['labels_get_dtype'](layer)


def _patch_labels_get_dtype(function: Callable[[Any], Any]) -> None:
    """Point ``get_dtype`` at ``function`` in napari's labels utils and every module that imported it.

    The Labels layer controls call it while a layer is added, on the main thread.
    """
    import sys

    utils = _labels_utils()
    current = utils.get_dtype
    for name, module in list(sys.modules.items()):
        if name.startswith('napari') and getattr(module, 'get_dtype', None) is current:
            module.get_dtype = function


class _Constructing(threading.local):
    depth = 0


#: How many layer constructors are running on this thread.
_constructing = _Constructing()


def _in_memory_data(layer: Any) -> bool:
    """True if the layer's data (every level, if multiscale) is in memory (numpy; Shapes' lists,
    Surface's tuples)."""
    return all(isinstance(data, np.ndarray | list | tuple) for data in data_arrays(layer))


# --- which slicer a viewer uses (new viewers: ``install``; running viewers: ``swap_slicer``) --

def unwrap_viewer(viewer: Any) -> Any:
    """The viewer behind napari's ``PublicOnlyProxy`` (what plugin widgets are handed)."""
    return getattr(viewer, '__wrapped__', viewer)


def qt_viewer_of(viewer: Any) -> Any | None:
    """The ``QtViewer`` showing ``viewer``, or None for a bare ``ViewerModel``."""
    window = getattr(viewer, 'window', None)
    return getattr(window, '_qt_viewer', None)


def napari_slicer() -> Any:
    """A new napari ``_LayerSlicer`` (it reads the async preference into ``_force_sync``)."""
    from napari.components._layer_slicer import _LayerSlicer

    return _LayerSlicer()


def _is_ours(slicer: Any) -> bool:
    return hasattr(slicer, 'attach_main_thread')


def notify_error(message: str) -> None:
    """Show ``message`` as napari's error notification (the message only, no traceback)."""
    from napari.utils.notifications import Notification, NotificationSeverity, notification_manager

    notification_manager.dispatch(Notification(message, severity=NotificationSeverity.ERROR))


def connect_slicer(viewer: Any, slicer: Any, qt_viewer: Any | None) -> None:
    """Wire ``slicer`` into ``viewer``'s ``QtViewer`` as napari wires its own.

    Our slicer applies responses itself, on the main thread, only if still newest: napari's
    ``QtViewer._on_slice_ready`` is disconnected. napari's slicer gets ``_on_slice_ready``
    connected, as ``QtViewer.__init__`` does. (Layers that leave a viewer are forgotten by the
    slicer the viewer uses then: see ``on_remove_layer`` in :func:`patch_napari`.)
    """
    if qt_viewer is None:
        return
    if not _is_ours(slicer):
        slicer.events.ready.connect(qt_viewer._on_slice_ready)
        return
    slicer.events.ready.disconnect(qt_viewer._on_slice_ready)
    from napari_async_slicing._qt import _loading_cue
    from napari_async_slicing._qt._main_thread import MainThreadCaller

    slicer.attach_main_thread(MainThreadCaller())
    _loading_cue.watch(viewer)


def disconnect_slicer(viewer: Any, slicer: Any, qt_viewer: Any | None) -> None:
    """Undo :func:`connect_slicer` (nothing from ``slicer`` reaches the viewer afterwards)."""
    if qt_viewer is not None:
        slicer.events.ready.disconnect(qt_viewer._on_slice_ready)


def shutdown_slicer(slicer: Any) -> None:
    """Shut ``slicer`` down without blocking the main thread on a read.

    Ours cancels its reads and waits for its threads (quick: reads are cancellable). napari's
    ``_LayerSlicer.shutdown`` waits for its running task, which can be a slow remote read; we
    cancel its queued tasks and let the running one end on its own thread (its response reaches
    nobody: callers disconnect the slicer first).
    """
    if _is_ours(slicer):
        slicer.shutdown()
        return
    slicer._executor.shutdown(wait=False, cancel_futures=True)
    slicer.events.disconnect()
    slicer.events.ready.disconnect()


def slicer_threads_alive(slicer: Any) -> bool:
    """True while any of ``slicer``'s worker threads is still running."""
    executors = slicer.pools() if _is_ours(slicer) else [slicer._executor]
    return any(t.is_alive() for ex in executors for t in list(getattr(ex, '_threads', ())))


def swap_slicer(viewer: Any, new_slicer: Any) -> Any:
    """Make a running ``viewer`` use ``new_slicer``; return the old one (shut down).

    The old slicer is disconnected first (so none of its in-flight responses is shown), then
    shut down (its reads cancelled or left to finish unseen: no thread left); the new one is
    wired as for a new viewer and the current dims are sliced again, so the canvas shows the
    current planes without a restart.
    """
    viewer = unwrap_viewer(viewer)
    old = viewer._layer_slicer
    if old is new_slicer:
        return old
    if _is_ours(new_slicer):
        patch_napari(type(new_slicer))
    qt_viewer = qt_viewer_of(viewer)
    disconnect_slicer(viewer, old, qt_viewer)
    shutdown_slicer(old)
    viewer._layer_slicer = new_slicer
    connect_slicer(viewer, new_slicer, qt_viewer)
    reslice_all(viewer, new_slicer)
    return old


def reslice_all(viewer: Any, slicer: Any) -> None:
    """Slice every layer of ``viewer`` at the current dims again with ``slicer``."""
    layers = list(viewer.layers)
    if _is_ours(slicer):
        slicer.submit(layers=layers, dims=viewer.dims, force=True)
        return
    # napari's slicer: a forced ``Layer._slice_dims`` updates the slice input but skips the view
    # slice, so set the input, then let ``Layer.refresh`` slice (sync) or submit a reload (async).
    for layer in layers:
        layer._slicing_state.set_slice_input_from_dims(viewer.dims, force=True)
        layer.refresh()


# Layers whose slicing our slicer currently owns (so ``Layer.refresh`` routes through it).
_managed: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def manage(layer: Any, slicer: Any) -> None:
    try:
        _managed[layer] = slicer
    except TypeError:  # not weak-referenceable: leave napari's refresh alone
        pass


def unmanage(layer: Any) -> None:
    _managed.pop(layer, None)


def unmanage_all(slicer: Any) -> None:
    for layer, owner in list(_managed.items()):
        if owner is slicer:
            _managed.pop(layer, None)


def managing_slicer(layer: Any) -> Any | None:
    slicer = _managed.get(layer)
    if slicer is None or slicer.is_shut_down:
        return None
    return slicer
