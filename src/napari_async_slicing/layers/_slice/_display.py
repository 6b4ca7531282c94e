"""What a worker computes so that showing an Image or Labels slice costs the main thread O(1).

:func:`display_settings` captures the layer's display settings by value at submit (main
thread); :func:`shown_slice` (worker) turns napari's response into a ``ShownSlice``: the view
exactly as napari converts it, the texture vispy takes (texture dtype, C-contiguous), the
thumbnail already at thumbnail size, and the slice's contrast ranges when auto-contrast needs them.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Imported here, not on first use: a first slice must not pay (and measure) these imports on a
# worker, or the slicer's running estimate of the layer's slicing time starts far too high.
from napari.layers.utils.layer_utils import calc_data_range
from scipy import ndimage as ndi

from napari_async_slicing import _napari_compat as compat
from napari_async_slicing._reading import current_token


def _fields_of(value: Any) -> tuple[str, ...]:
    """The init fields of a (napari) dataclass value."""
    return _field_names(type(value))  # type: ignore[arg-type]  # classes are hashable


@functools.cache
def _field_names(cls: Any) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


# --- display settings (main thread) ------------------------------------------------------------


@dataclass(frozen=True)
class DisplaySettings:
    """What the main thread would use to turn a raw slice into what is shown, taken at submit.

    ``key`` is compared again at apply: if the layer's settings changed in between, the
    precomputed display data is not used.
    """

    key: tuple
    kind: str  # 'image' or 'labels'
    ndim: int
    thumbnail_shape: tuple
    rgb: bool = False
    dtype: Any = None
    multiscale: bool = False
    #: Image: ``CoercedContrastLimits`` when the limits are outside what vispy supports, else None.
    coercion: Any = None
    #: Image: contrast limits follow the slice (auto-contrast, or a first slice still to come).
    needs_ranges: bool = False
    auto_contrast: bool = False
    #: Image: the layer's limits are still to be set from its first slice.
    first_slice: bool = False
    contour: int = 0
    #: Labels: the colormap object (compared through ``key``, which holds what the cast reads).
    colormap: Any = field(default=None, compare=False, repr=False)


def _layer_kind(layer: Any) -> str | None:
    from napari.layers import Image, Labels

    # Exact types only: a subclass may override how napari converts or thumbnails its data.
    if type(layer) is Image:
        return 'image'
    if type(layer) is Labels:
        return 'labels'
    return None


def display_key(layer: Any) -> tuple | None:
    """Everything the worker-side display computation depends on (cheap, main thread)."""
    kind = _layer_kind(layer)
    if kind is None:
        return None
    dtype = np.dtype(layer.dtype)
    common = (kind, layer.ndim, compat.thumbnail_shape(layer), dtype, bool(layer.multiscale))
    if kind == 'image':
        return (
            *common,
            bool(layer.rgb),
            compat.contrast_coercion(layer.contrast_limits),
            bool(layer.auto_contrast),
            compat.should_calc_clims(layer),
            compat.auto_contrast_source(layer),
        )
    cmap = layer.colormap
    contour = int(layer.contour)
    key: tuple = (*common, contour, cmap.background_value if contour else None)
    if dtype.itemsize > 2:  # only wide ints are mapped through the colormap on the CPU
        key += (
            type(cmap),
            id(cmap),
            cmap.use_selection,
            cmap.selection if cmap.use_selection else None,
            cmap.background_value,
            len(cmap.colors),
            id(getattr(cmap, 'color_dict', None)),
        )
    return key


def display_settings(layer: Any) -> DisplaySettings | None:
    """The layer's display settings, or None if napari's own apply path must be kept."""
    key = display_key(layer)
    if key is None:
        return None
    common = {
        'key': key,
        'ndim': key[1],
        'thumbnail_shape': key[2],
        'dtype': key[3],
        'multiscale': key[4],
    }
    if key[0] == 'labels':
        return DisplaySettings(kind='labels', contour=key[5], colormap=layer.colormap, **common)
    rgb, coercion, auto, should_calc, source = key[5:10]
    needs_ranges = auto or should_calc
    if needs_ranges and source != 'slice':
        return None  # limits from the whole data set: napari's path reads it on the main thread
    return DisplaySettings(
        kind='image',
        rgb=rgb,
        coercion=coercion,
        needs_ranges=needs_ranges,
        auto_contrast=auto,
        first_slice=should_calc,
        **common,
    )


# --- the worker side ---------------------------------------------------------------------------


@functools.cache
def _shown_slice_class() -> type:
    base = compat.scalar_field_response_class()

    @dataclass(frozen=True)
    class ShownSlice(base):  # type: ignore[misc,valid-type]  # napari's class, found at run time
        """napari's slice response with its display data computed (see the module docstring)."""

        display_key: tuple = field(default=(), repr=False)
        #: ``image.view`` as vispy takes it (texture dtype, C-contiguous); the layer shows this one.
        texture: Any = field(default=None, repr=False, compare=False)
        #: Image auto-contrast: napari's first limits (from the last row for multiscale) ...
        first_range: tuple | None = None
        #: ... and the limits from the whole slice.
        slice_range: tuple | None = None
        #: napari's raw response (applied the napari way if the settings changed meanwhile).
        source: Any = field(default=None, repr=False, compare=False)
        #: A coarse first look (progressive multiscale): the layer stays loading; the final follows.
        preview: bool = False

        def to_displayed(self, converter: Any) -> Any:
            return self  # already converted, on the worker

    ShownSlice.__qualname__ = ShownSlice.__name__ = 'ShownSlice'
    return ShownSlice


def shown_slice_class() -> type:
    return _shown_slice_class()


def _displayed_view(raw: np.ndarray, settings: DisplaySettings) -> np.ndarray:
    """What napari's ``_raw_to_displayed`` makes of ``raw``."""
    if settings.kind == 'labels':
        return compat.labels_displayed(raw, settings.contour, settings.colormap)
    if settings.coercion is not None:
        return settings.coercion.coerce_data(raw)
    return raw


def _texture(view: np.ndarray) -> np.ndarray:
    """vispy casts to a texture dtype and copies non-contiguous data at upload: do both here."""
    return np.ascontiguousarray(compat.texture_dtype_data(view))


def thumbnail_zoom(image_shape: tuple, thumbnail_shape: tuple) -> tuple[float, float]:
    """The zoom napari's ``_update_thumbnail`` applies (fit in the thumbnail, at least 1 pixel).

    The same float64 arithmetic as napari's numpy version, in plain floats (it runs per slice).
    """
    h, w = (float(s) for s in image_shape[:2])
    th, tw = (float(s) for s in thumbnail_shape[:2])
    factor = min(th / h, tw / w)
    new_h = min(max(factor * h, 1.0), th)
    new_w = min(max(factor * w, 1.0), tw)
    return (new_h / h, new_w / w)


def _small_thumbnail(thumbnail: np.ndarray, ndisplay: int, settings: DisplaySettings) -> np.ndarray:
    """The thumbnail source at thumbnail size, shaped so napari's own thumbnail code keeps it.

    napari max-projects 3D slices along the first axis and zooms to the thumbnail size; a zoom of
    an image already at that size is the identity, so napari's ``_update_thumbnail`` (which also
    colours it with the current colormap, limits, gamma, opacity) gives the same pixels.
    """
    projected = ndisplay == 3 and settings.ndim > 2
    image = np.max(thumbnail, axis=0) if projected else thumbnail
    if image.dtype == np.float16:  # as napari: ndi.zoom does not take float16
        image = image.astype(np.float32)
    zoom = thumbnail_zoom(image.shape, settings.thumbnail_shape)
    if zoom == (1.0, 1.0):
        small = image  # already at thumbnail size: napari's zoom is the identity
    else:
        small = ndi.zoom(image, (*zoom, 1) if settings.rgb else zoom, prefilter=False, order=0)
    return small[np.newaxis] if projected else small


def shown_slice(response: Any, settings: DisplaySettings, *, preview: bool = False) -> Any:
    """Worker: compute display data, thumbnail and contrast ranges for napari's ``response``."""
    token = current_token()
    raw = response.image.raw
    view = _displayed_view(raw, settings)
    texture = _texture(view)
    token.raise_if_cancelled()
    thumbnail = response.thumbnail.raw
    if not response.empty:
        thumbnail = _small_thumbnail(thumbnail, response.slice_input.ndisplay, settings)
    first_range = slice_range = None
    if settings.needs_ranges:
        token.raise_if_cancelled()
        rgb, dtype = settings.rgb, settings.dtype
        slice_range = calc_data_range(raw, rgb=rgb, dtype=dtype)
        if settings.auto_contrast:
            first = raw[-1] if settings.multiscale else raw
            first_range = slice_range if first is raw else calc_data_range(first, rgb=rgb, dtype=dtype)
    values = {name: getattr(response, name) for name in _fields_of(response)}
    values.update(
        image=compat.scalar_field_view(raw, view),
        texture=texture,
        thumbnail=compat.scalar_field_view(thumbnail, thumbnail),
        display_key=settings.key,
        first_range=first_range,
        slice_range=slice_range,
        source=response,
        preview=preview,
    )
    return _shown_slice_class()(**values)


# --- the main thread ---------------------------------------------------------------------------
