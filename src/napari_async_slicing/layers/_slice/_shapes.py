"""Shapes: which shapes are in view, and their displayed mesh, computed off the main thread.

napari 0.9 slices Shapes synchronously: ``Shapes._set_view_slice`` sets ``ShapeList.slice_key``,
whose ``_update_displayed`` compares every shape's slice key with the new one and gathers the
displayed triangles, colours and vertices (Python loops over shapes), then the refresh rasterizes
a thumbnail. Here a worker does all of that from a by-value snapshot of the ``ShapeList`` and the
main thread only stores the results (:func:`apply`: attribute assignments, a 32x32 thumbnail and
napari's ``set_data`` event).

The worker also builds the vispy ``MeshData`` of the shape faces that napari's
``VispyShapesLayer._on_data_change`` would build on the main thread for this view (the layer's
whole mesh vertex array, the displayed triangles and their colours), with its bounds (a min/max
over every mesh vertex, the same for every step) computed once per snapshot. :func:`apply` hands
that mesh to the vispy layer and keeps napari's handler from rebuilding it. That handler also
reads ``len(layer.data)``, which builds a list of every shape's data: with 20 000 shapes that
alone cost more than a frame per step.

The snapshot (copies of the mesh arrays) is taken on the main thread when the layer's shapes
changed since the last one (napari funnels every edit through ``ShapeList._update_displayed``,
which we watch), so scrubbing reuses it and submitting costs O(1). Per-shape scalars (slice
keys, triangle counts, bounding boxes) are read from the snapshot's shape objects once, on the
worker, and cached. A response computed from a snapshot that an edit has since replaced is
never stored: :func:`apply` falls back to napari's own synchronous update for it.

Changing ``ndisplay`` or the dims order rebuilds napari's whole ``ShapeList`` (re-triangulating
every shape); those steps stay on napari's synchronous path (:func:`can_slice`).
"""

from __future__ import annotations

import functools
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_async_slicing import _napari_compat as compat


def _shapes_type() -> type:
    from napari.layers import Shapes

    return Shapes


def handles_layer(layer: Any) -> bool:
    """Exactly napari's Shapes (subclasses from plugins keep napari's own slicing)."""
    return type(layer) is _shapes_type()


def can_slice(layer: Any, dims: Any) -> bool:
    """Only steps that keep ndisplay and dims order (no ``ShapeList`` rebuild) go to a worker."""
    slice_input = compat.make_slice_input(layer, dims)
    ndisplay, order = compat.shapes_view_state(layer)
    return slice_input.ndisplay == ndisplay and tuple(slice_input.order) == tuple(order)


@dataclass(eq=False)
class ShapesSnapshot:
    """By-value copy of what a slice of a Shapes layer is computed from."""

    shapes: tuple
    arrays: dict[str, np.ndarray]
    _derived: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def derived(self) -> dict[str, Any]:
        """Per-shape scalars, gathered once per snapshot (on the first worker that needs them)."""
        with self._lock:
            if not self._derived:
                shapes = self.shapes
                n = len(shapes)
                self._derived.update(
                    slice_keys=np.array([s.slice_key for s in shapes]) if n else np.empty((0, 2, 0)),
                    triangles_used=np.fromiter((s.triangles_count for s in shapes), np.int64, n),
                    vertices_used=np.fromiter((s.data_displayed.shape[0] for s in shapes), np.int64, n),
                    bounding_boxes=np.array([compat.shape_bounding_box(s) for s in shapes]) if n else None,
                    edge_only=np.array([_is_edge_only(s) for s in shapes], dtype=bool),
                )
            return self._derived

    def mesh_bounds(self, vertices: np.ndarray, padded: bool) -> list:
        """vispy's ``MeshData.get_bounds`` of the whole mesh as napari hands it over (once per snapshot)."""
        key = 'mesh_bounds_padded' if padded else 'mesh_bounds'
        with self._lock:
            if key not in self._derived:
                self._derived[key] = _bounds(vertices)
            return self._derived[key]


def _bounds(vertices: np.ndarray) -> list:
    return [(vertices[:, ax].min(), vertices[:, ax].max()) for ax in range(vertices.shape[1])]


def _is_edge_only(shape: Any) -> bool:
    from napari.layers.shapes._shapes_models import Line, Path

    return type(shape) in (Path, Line)


# One snapshot per layer while its ShapeList is unchanged: layer -> (shape list, snapshot).
_snapshots: weakref.WeakKeyDictionary[Any, tuple[Any, ShapesSnapshot]] = weakref.WeakKeyDictionary()


def _invalidate(layer_ref: weakref.ReferenceType) -> None:
    layer = layer_ref()
    if layer is not None:
        _snapshots.pop(layer, None)


def current_snapshot(layer: Any) -> ShapesSnapshot:
    """The layer's snapshot, copied again only after its shapes changed (main thread)."""
    shape_list = compat.shape_list(layer)
    cached = _snapshots.get(layer)
    if cached is not None and cached[0] is shape_list:
        return cached[1]
    layer_ref = weakref.ref(layer)
    compat.watch_shape_list(shape_list, lambda: _invalidate(layer_ref))
    snapshot = ShapesSnapshot(shapes=tuple(shape_list.shapes), arrays=compat.shape_list_arrays(shape_list))
    _snapshots[layer] = (shape_list, snapshot)
    return snapshot


@functools.cache
def _shown_mesh_type() -> type:
    from vispy.geometry import MeshData

    class ShownMesh(MeshData):
        """The faces mesh of one view, with its bounds computed beforehand (vispy's own otherwise)."""

        def __init__(self, vertices, faces, face_colors, bounds) -> None:
            super().__init__(vertices=vertices, faces=faces, face_colors=face_colors)
            self._shown_vertices = vertices
            self._shown_bounds = bounds

        def get_bounds(self):
            if self.get_vertices() is self._shown_vertices:
                return self._shown_bounds
            return super().get_bounds()

    return ShownMesh


def faces_mesh(snapshot: ShapesSnapshot, shown: dict[str, np.ndarray], ndisplay: int, ndim: int) -> Any:
    """The shape-faces ``MeshData`` napari's vispy layer builds for this view (pure; any thread).

    napari hands vispy every mesh vertex of the layer (axes reversed to xyz), the displayed
    triangles and their colours; a placeholder triangle when nothing is shown; vertices padded with
    a zero axis for 2D shapes in a 3D view.
    """
    faces = shown['displayed_triangles']
    colors = shown['displayed_triangles_colors']
    vertices = snapshot.arrays['mesh_vertices'][:, ::-1]
    whole_mesh = not (len(vertices) == 0 or len(faces) == 0)
    if not whole_mesh:
        vertices = np.zeros((3, ndisplay))
        faces = np.array([[0, 1, 2]])
        colors = np.array([[0, 0, 0, 0]])
    padded = bool(len(snapshot.shapes)) and ndisplay == 3 and ndim == 2
    if padded:
        vertices = np.pad(vertices, ((0, 0), (0, 1)), mode='constant')
    bounds = snapshot.mesh_bounds(vertices, padded) if whole_mesh else _bounds(vertices)
    return _shown_mesh_type()(vertices, faces, colors, bounds)


@dataclass(frozen=True, eq=False)
class ShapesSliceResponse:
    request_id: int
    slice_input: Any
    units: Any
    slice_key: list
    snapshot: ShapesSnapshot
    shown: dict[str, np.ndarray]
    #: RGBA float thumbnail, or None when napari would not update it (a shape is being dragged).
    thumbnail: np.ndarray | None
    #: vispy mesh of the shape faces (:func:`faces_mesh`) and the (ndisplay, ndim) it was built for.
    mesh: Any = None
    mesh_key: tuple = ()


@dataclass(frozen=True, eq=False)
class ShapesSliceRequest:
    """Everything a worker needs to slice a Shapes layer, captured by value on the main thread."""

    id: int
    slice_input: Any
    units: Any
    slice_key: np.ndarray
    snapshot: ShapesSnapshot
    thumbnail_shape: tuple[int, ...]
    max_thumbnail_shapes: int
    thumbnail_allowed: bool
    ndim: int = 0

    def __call__(self) -> ShapesSliceResponse:
        shown = displayed_view(self.snapshot, self.slice_key)
        thumbnail = None
        if self.thumbnail_allowed:
            thumbnail = _thumbnail(self, shown['displayed'])
        ndisplay = self.slice_input.ndisplay
        return ShapesSliceResponse(
            request_id=self.id,
            slice_input=self.slice_input,
            units=self.units,
            slice_key=list(self.slice_key),
            snapshot=self.snapshot,
            shown=shown,
            thumbnail=thumbnail,
            mesh=faces_mesh(self.snapshot, shown, ndisplay, self.ndim),
            mesh_key=(ndisplay, self.ndim),
        )

    def work_bytes(self) -> int:
        """Slicing walks every shape's arrays (see ``layers._slice.work_bytes``)."""
        return sum(array.nbytes for array in self.snapshot.arrays.values())

    def same_as(self, other: Any) -> bool:
        return (
            type(other) is type(self)
            and other.snapshot is self.snapshot
            and other.units == self.units
            and other.thumbnail_allowed == self.thumbnail_allowed
            and _same_slice_input(other.slice_input, self.slice_input)
        )


def _same_slice_input(a: Any, b: Any) -> bool:
    return (
        a.ndisplay == b.ndisplay
        and tuple(a.order) == tuple(b.order)
        and np.array_equal(a.world_slice.as_array(), b.world_slice.as_array(), equal_nan=True)
    )


def make_request(layer: Any, dims: Any) -> ShapesSliceRequest:
    """Main thread, O(1) while the shapes are unchanged: slice input, slice key, snapshot."""
    slice_input = compat.make_slice_input(layer, dims)
    point = compat.data_point(layer, slice_input, dims)
    return ShapesSliceRequest(
        id=compat.next_request_id(),
        slice_input=slice_input,
        units=dims.units,
        slice_key=np.array(point)[list(slice_input.not_displayed)],
        snapshot=current_snapshot(layer),
        thumbnail_shape=compat.thumbnail_shape(layer),
        max_thumbnail_shapes=compat.shapes_max_thumbnail(layer),
        thumbnail_allowed=compat.shapes_thumbnail_allowed(layer),
        ndim=layer.ndim,
    )


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for each start/count, vectorized."""
    counts = counts.astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    offsets = np.repeat(starts.astype(np.int64) - np.cumsum(counts) + counts, counts)
    return offsets + np.arange(total, dtype=np.int64)


def _index_range(index: np.ndarray, used: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """napari's ``_mesh_triangles_range_seq`` / ``_vertices_range_seq`` as index arrays."""
    if disp.size == 0:
        return np.empty(0, dtype=np.int64)
    if disp[-1] - disp[0] == len(disp) - 1:  # contiguous: one range (as napari: a slice)
        return np.arange(index[disp[0]], index[disp[-1]] + used[disp[-1]], dtype=np.int64)
    return _ranges(index[disp], used[disp])


def _owner_map(length: int, index: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """Which shape each displayed element comes from (napari fills by each shape's allotted range)."""
    owners = np.full(length, -1, dtype=np.int64)
    if disp.size:
        fill = np.repeat(disp, (index[disp + 1] - index[disp]).astype(np.int64))
        n = min(length, len(fill))
        owners[:n] = fill[:n]
    return owners


def displayed_view(snapshot: ShapesSnapshot, slice_key: np.ndarray) -> dict[str, np.ndarray]:
    """What ``ShapeList._update_displayed`` computes for ``slice_key`` (pure; any thread)."""
    a = snapshot.arrays
    d = snapshot.derived()
    if len(snapshot.shapes):
        key = np.array([list(slice_key), list(slice_key)])
        displayed = np.all(np.abs(d['slice_keys'] - key) < 0.5, axis=(1, 2))
    else:
        displayed = np.array([])
    disp = np.nonzero(displayed)[0]
    z_order = a['triangles_z_order']
    triangles = z_order[_index_range(a['triangles_index'], d['triangles_used'], disp)]
    vertices = _index_range(a['vertices_index'], d['vertices_used'], disp)
    displayed_triangles = a['triangles'][triangles]
    displayed_vertices = a['vertices'][vertices]
    return {
        'displayed': displayed,
        'displayed_triangles': displayed_triangles,
        'displayed_triangles_to_shape_index': _owner_map(
            displayed_triangles.shape[0], a['triangles_index'], disp
        ),
        'displayed_triangles_colors': a['triangles_colors'][triangles],
        'displayed_vertices': displayed_vertices,
        'displayed_vertices_to_shape_num': _owner_map(displayed_vertices.shape[0], a['vertices_index'], disp),
        'displayed_index': a['vertices_index'][disp],
    }


def _thumbnail(request: ShapesSliceRequest, displayed: np.ndarray) -> np.ndarray:
    """``Shapes._update_thumbnail`` / ``ShapeList.to_colors`` from the snapshot."""
    snapshot = request.snapshot
    shape = request.thumbnail_shape
    colormapped = np.zeros(shape)
    colormapped[..., 3] = 1
    if not len(snapshot.shapes):
        return colormapped
    d = snapshot.derived()
    boxes = d['bounding_boxes']
    de = np.vstack([np.min(boxes[:, 0, :], axis=0), np.max(boxes[:, 1, :], axis=0)])
    shown_dims = list(request.slice_input.displayed)
    offset = (np.array([de[0, i] for i in shown_dims]) + 0.5)[-2:]
    extent = np.ceil([de[1, i] - de[0, i] + 1 for i in shown_dims]).astype(int)
    zoom_factor = np.divide(shape[:2], extent[-2:]).min()

    colors = np.zeros((*shape[:2], 4), dtype=float)
    colors[..., 3] = 1
    z_order = snapshot.arrays['z_order']
    in_view = z_order[np.isin(z_order, np.argwhere(displayed))]
    if len(in_view) > request.max_thumbnail_shapes:
        in_view = in_view[-request.max_thumbnail_shapes :]
    face, edge = snapshot.arrays['face_color'], snapshot.arrays['edge_color']
    for ind in in_view:
        mask = snapshot.shapes[ind].to_mask(shape[:2], zoom_factor=zoom_factor, offset=offset)
        colors[mask, :] = edge[ind] if d['edge_only'][ind] else face[ind]
    return colors


def update_thumbnail(layer: Any, response: ShapesSliceResponse) -> None:
    if response.thumbnail is not None:
        layer.thumbnail = response.thumbnail


def apply(layer: Any, response: ShapesSliceResponse, thumbnail: bool = True) -> None:
    """Main thread: store the precomputed view (assignments), thumbnail and notify vispy."""
    compat.set_slice_input(layer, response.slice_input, response.units)
    cached = _snapshots.get(layer)
    if cached is None or cached[1] is not response.snapshot or cached[0] is not compat.shape_list(layer):
        # The shapes changed after this was computed: napari's own update for this slice.
        compat.sync_set_view_slice(layer)
        layer.events.set_data()
        return
    old_key = compat.shape_list(layer).slice_key
    view_changed = not np.array_equal(np.asarray(response.slice_key), np.asarray(old_key))
    compat.set_shapes_displayed(layer, response.slice_key, response.shown)
    if view_changed:
        compat.shapes_view_changed(layer)
    if thumbnail:
        update_thumbnail(layer, response)
    vispy_layers = compat.vispy_shapes_layers(layer) if response.mesh is not None else []
    built_for = (compat.shapes_view_state(layer)[0], layer.ndim)
    if vispy_layers and response.mesh_key == built_for:
        compat.shapes_set_data_with_mesh(layer, vispy_layers, response.mesh)
    else:  # no vispy layer of ours to feed, or the layer is not what the mesh was built for
        layer.events.set_data()
    # Selected shapes entering or leaving the view change the highlight; with nothing selected
    # only a reset hover value does, which the unforced refresh notices by itself.
    compat.set_highlight(layer, force=view_changed and bool(layer.selected_data))
