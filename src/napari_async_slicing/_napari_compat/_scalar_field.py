"""Image and Labels (scalar fields): napari's request, response and display conversion.

What napari computes on the main thread when a slice arrives, split so the O(N) parts can run on
a worker: ``ScalarFieldSlicingState._update_slice_response`` (converts with
``layer._raw_to_displayed``), ``_ImageSlicingState._update_slice_response`` (auto-contrast from
the slice), ``_update_thumbnail`` (``layer._thumbnail_shape``), vispy's ``fix_data_dtype``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari.layers import Layer


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


def set_slice_without_conversion(layer: Layer, response: Any) -> None:
    """napari's generic ``ScalarFieldSlicingState._update_slice_response`` (no Image auto-contrast).

    ``response.to_displayed`` is called by it; a response whose view is already displayable
    returns itself there.
    """
    from napari.layers._scalar_field.scalar_field import ScalarFieldSlicingState

    ScalarFieldSlicingState._update_slice_response(layer._slicing_state, response)


def thumbnail_shape(layer: Layer) -> tuple[int, ...]:
    return tuple(layer._thumbnail_shape)


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
