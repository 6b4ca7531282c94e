"""Image and Labels: napari's scalar-field request, run off the main thread with everything O(N).

napari 0.9's async path hands the main thread a raw slice and then, there, converts it for display
(``Labels._raw_to_displayed``: colormap cast and contours; ``Image._raw_to_displayed``: rescaling
for contrast limits outside float32), recomputes auto-contrast from the whole slice, downsamples
the thumbnail (a max projection of the whole volume in 3D), and lets vispy cast the dtype and
copy non-contiguous data at upload. Here the worker does all of that too:

- :func:`prepare` (main thread, at submit) captures the layer's display settings *by value*
  (:class:`DisplaySettings`) and returns napari's request with them attached;
- the request (worker) returns a :class:`ShownSlice`: napari's response (its image view exactly
  as napari converts it) plus ``texture``, that view as vispy takes it (texture dtype,
  C-contiguous); its thumbnail is already downsampled to the layer's thumbnail size, and it
  carries the slice's contrast ranges when auto-contrast needs them;
- :func:`apply` (main thread) sets it on the layer with napari's own state update, minus the
  conversion, with ``texture`` as the layer's view (so vispy neither casts nor copies it), and
  hands the precomputed contrast limits to the layer. napari's thumbnail code then colours the
  small thumbnail (it is already at thumbnail size, so its zoom is the identity).

Multiscale layers are read progressively (:func:`_progressive`): in 2D, the coarsest level of the
new plane (napari's thumbnail level) is read beside the data level and shown first as a
*preview*; the final response then replaces it.

If the display settings changed between submit and apply (another colormap, a contour width,
contrast limits that now need rescaling ...), :func:`apply` falls back to napari's own main-thread
path with the raw response, so what is shown is always what napari would show.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_async_slicing import _napari_compat as compat
from napari_async_slicing._pyramid import UNKNOWN, coarsest_level, known_coarsest_level
from napari_async_slicing._reading import LazySource, NotCached, Progress, current, current_token, reading
from napari_async_slicing.layers._slice._display import (
    DisplaySettings,
    _fields_of,
    display_key,
    display_settings,
    shown_slice,
    shown_slice_class,
)

logger = logging.getLogger(__name__)

_DATA_FIELDS = ('data_at_data_level', 'data_at_thumbnail_level')


def handles(request: Any) -> bool:
    return dataclasses.is_dataclass(request) and all(hasattr(request, name) for name in _DATA_FIELDS)


def _lazy(data: Any) -> Any:
    # In-memory numpy needs neither cancellation nor retries: keep napari's fast path.
    if isinstance(data, np.ndarray | LazySource) or not hasattr(data, 'shape'):
        return data
    return LazySource(data)


def _unfused_dask() -> AbstractContextManager:
    """napari's dask setting for slicing (no task fusion) without its shared dask cache.

    napari's ``configure_dask`` also activates one global ``dask.cache.Cache``, which fails with
    ``KeyError`` on task keys when two computes of the same graph overlap — as they do here when a
    superseded read winds down while the newest runs. Our own chunk cache replaces it.
    """
    try:
        import dask
    except ImportError:  # pragma: no cover
        return nullcontext()
    return dask.config.set({'optimization.fuse.active': False})


def prepare(request: Any, layer: Any = None) -> Any:
    """Route data through cancellable reads; attach the layer's display settings (by value)."""
    changes: dict[str, Any] = {name: _lazy(getattr(request, name)) for name in _DATA_FIELDS}
    if any(changes[name] is not getattr(request, name) for name in _DATA_FIELDS):
        if hasattr(request, 'dask_indexer'):
            changes['dask_indexer'] = _unfused_dask
        request = dataclasses.replace(request, **changes)
    settings = display_settings(layer) if layer is not None else None
    if settings is None:
        return request
    values = {name: getattr(request, name) for name in _fields_of(request)}
    return _shown_request_class(type(request))(**values, display=settings)  # type: ignore[arg-type]


def work_bytes(request: Any) -> int:
    """Bytes of what an in-memory request reads: the displayed plane or volume (with the thick
    slab of a projection, and rgb channels), not the whole array."""
    data = request.data_at_data_level
    shape = getattr(data, 'shape', ())
    slice_input = request.slice_input
    count = 1
    for axis in slice_input.displayed:
        count *= shape[axis] if axis < len(shape) else 1
    thick = getattr(request, 'data_slice', None)
    if thick is not None and getattr(request, 'projection_mode', 'none') != 'none':
        for axis in slice_input.not_displayed:
            count *= int(np.nan_to_num(thick.margin_left[axis] + thick.margin_right[axis])) + 1
    if getattr(request, 'rgb', False) and shape:
        count *= shape[-1]
    return count * np.dtype(getattr(data, 'dtype', np.float64)).itemsize


@functools.cache
def _shown_request_class(base: Any) -> Any:
    @dataclass(frozen=True)
    class ShownRequest(base):
        display: DisplaySettings | None = None

        def __call__(self) -> Any:
            coarse = _coarse_array(self)
            with reading(coarse_array=coarse) if coarse is not None else nullcontext():
                progress = current().progress
                path = _coarse_first_path(self) if progress is not None else None
                if path is not None:
                    return path(self, base, progress)
                return shown_slice(base.__call__(self), self.display)  # type: ignore[arg-type]

    ShownRequest.__qualname__ = ShownRequest.__name__ = f'Shown{base.__name__}'
    return ShownRequest


def _coarse_array(request: Any) -> Any:
    """The array of a multiscale request's coarsest level (its first looks), if lazily read."""
    if not getattr(request, 'multiscale', False) or request.thumbnail_level == request.data_level:
        return None
    data = request.data_at_thumbnail_level
    return data.array if isinstance(data, LazySource) else None


def _progressive(request: Any, base: type, progress: Progress) -> Any:
    """Worker: read the coarse (thumbnail-level) plane beside the data level and show it first.

    napari reads the data level, then the thumbnail level (its coarsest). Here the thumbnail
    level's read is sent first; another worker waits for it and publishes it as a preview (the
    whole plane at the coarse level) as soon as it arrives, while this one reads the data level.
    napari's own request code then builds the final response, its thumbnail-level read joining
    the one already made. The slicer shows the preview only if the request is still the layer's
    newest and its final has not been shown yet.
    """
    data, index = compat.thumbnail_level_index(request)
    if isinstance(data, LazySource):
        data[index].start()  # its request goes out first, and is answered first

    def read_coarse() -> None:
        with request.dask_indexer():
            plane = compat.thumbnail_plane(request)
        _publish_preview(progress, request, lambda: compat.coarse_response(request, plane))

    with contextlib.suppress(RuntimeError):  # shutting down: no preview
        progress.beside(read_coarse)
    hold = current().hold_s
    if hold:
        cached = _from_cache(request, base)
        if cached is not None:
            return cached
        current().token.sleep(hold)  # a newer step supersedes it (raises): nothing read
    return shown_slice(base.__call__(request), request.display)


def _from_cache(request: Any, base: type) -> Any:
    """The request's response if its data level is all in the chunk cache (its coarse level may
    still be on its way: that read is waited for), else None, nothing read."""
    try:
        with reading(cache_only=True):
            return shown_slice(base.__call__(request), request.display)
    except NotCached:
        return None


def _publish_preview(progress: Progress, request: Any, coarse_response: Callable[[], Any]) -> None:
    """Beside thread: publish napari's response at a coarse level as ``request``'s preview. A
    preview that fails is skipped: the final response still comes."""
    try:
        preview = _as_preview(request, coarse_response())
        if current_token().cancelled:
            return
    except Exception:
        logger.debug('preview failed', exc_info=True)
        return
    progress.publish(preview)


def _as_preview(request: Any, response: Any) -> Any:
    """napari's response at a coarse level, display data computed, as ``request``'s preview: it
    sets contrast limits only where the layer has none yet (its first slice)."""
    settings = dataclasses.replace(
        request.display, auto_contrast=False, needs_ranges=request.display.first_slice
    )
    return shown_slice(response, settings, preview=True)


def _coarse_first_path(request: Any) -> Callable[[Any, type, Progress], Any] | None:
    """How a worker (with partial results shown) runs a request that shows a coarse first look:
    :func:`_progressive` (multiscale), :func:`_with_coarse_preview` (one level of a pyramid, if
    it is one); None: napari's request as it is."""
    if getattr(request, 'display', None) is None:
        return None
    if compat.has_coarser_thumbnail(request):
        return _progressive
    if isinstance(request.data_at_data_level, LazySource) and compat.has_single_level(request):
        return _with_coarse_preview
    return None


def _known_pyramid(request: Any) -> Any:
    """For a single-scale request: ``(coarsest level, factors)`` of the pyramid its data is a
    level of, ``UNKNOWN`` if not looked up yet, None if it is no pyramid's level (or napari
    sliced the data before the request)."""
    source = request.data_at_data_level
    known = known_coarsest_level(source.array)
    if known is None or tuple(source.shape) != tuple(source.array.shape):
        return None
    return known


def _with_coarse_preview(request: Any, base: type, progress: Progress) -> Any:
    """Worker: a single-scale plane of an OME-Zarr level, with the pyramid's coarsest level of
    it read beside and published first (as multiscale layers do, see :func:`_progressive`)."""
    known = _known_pyramid(request)
    if known is None:  # not a level of a pyramid: as napari
        return shown_slice(base.__call__(request), request.display)
    source = request.data_at_data_level
    if known is UNKNOWN:
        # Look the pyramid up beside this read (the group's metadata, once per array); the
        # next step shows a preview if there is one.
        with contextlib.suppress(RuntimeError):  # shutting down
            progress.beside(functools.partial(coarsest_level, source.array))
        return shown_slice(base.__call__(request), request.display)
    coarse, factors = known

    def read_coarse() -> Any:
        coarse_request = compat.as_coarse_level_request(request, LazySource(coarse), factors)
        with coarse_request.dask_indexer():
            return base.__call__(coarse_request)

    publish = functools.partial(_publish_preview, progress, request, read_coarse)
    with contextlib.suppress(RuntimeError):  # shutting down
        progress.beside(publish, first=True)
    return shown_slice(base.__call__(request), request.display)


def handles_response(response: Any) -> bool:
    return isinstance(response, shown_slice_class())


def apply(layer: Any, response: Any, thumbnail: bool = True) -> None:
    """Main thread: what napari's ``_on_slice_ready`` does, with the O(N) parts precomputed."""
    if response.preview:
        _apply_preview(layer, response, thumbnail)
        return
    # napari marks the layer loaded before anything else (Labels' thumbnail waits for it).
    compat.mark_loaded(layer, response.request_id)
    if display_key(layer) != response.display_key:
        # The settings changed since submit: convert the napari way, here.
        compat.update_slice_response(layer, response.source)
    else:
        _set_shown(layer, response)
        if response.slice_range is not None:
            _apply_contrast(layer, response)
    compat.refresh_after_apply(layer, thumbnail)


def _apply_preview(layer: Any, response: Any, thumbnail: bool) -> None:
    """A coarse first look: shown as computed, the layer stays loading until the final comes.

    Contrast limits are set only if the layer has none yet (from the coarse plane; the final
    sets them again from the full-resolution slice). A preview whose settings changed since
    submit is not shown: the final is on its way.
    """
    if display_key(layer) != response.display_key:
        return
    _set_shown(layer, response)
    if response.slice_range is not None and compat.should_calc_clims(layer):
        _set_limits_from_slice(layer, response.slice_range)
    compat.refresh_after_apply(layer, thumbnail)


#: Texture-ready arrays made on a worker, by the id of the slice view napari's vispy layer casts.
_textures: dict[int, tuple[weakref.ReferenceType, Any]] = {}


def prepare_texture(view: Any, texture: Any) -> None:
    """Main thread: when napari's vispy layer casts ``view`` for upload, it gets ``texture``
    (the same cast, made on a worker) instead; the layer's slice keeps napari's own view."""
    if texture is view:
        return
    key = id(view)

    def forget(_ref: weakref.ReferenceType, key: int = key) -> None:
        _textures.pop(key, None)

    _textures[key] = (weakref.ref(view, forget), texture)


def prepared_texture(data: Any) -> Any | None:
    """The texture prepared for ``data`` (a slice view), or None."""
    entry = _textures.get(id(data))
    if entry is not None and entry[0]() is data:
        return entry[1]
    return None


def _set_shown(layer: Any, response: Any) -> None:
    """The layer's slice holds napari's own view; vispy uploads the texture made on the worker
    (no cast or copy here). Neither napari's full-size thumbnail source nor the raw response is
    kept."""
    prepare_texture(response.image.view, response.texture)
    compat.set_slice_without_conversion(layer, dataclasses.replace(response, texture=None, source=None))


def _apply_contrast(layer: Any, response: Any) -> None:
    """napari's ``_ImageSlicingState._update_slice_response`` with the ranges precomputed."""
    if layer.auto_contrast and response.first_range != response.slice_range:
        # napari sets the limits twice (from the last row for multiscale, then the whole slice);
        # the first only matters when it differs (it may widen ``contrast_limits_range``).
        layer.contrast_limits = response.first_range
    if compat.should_calc_clims(layer):
        _set_limits_from_slice(layer, response.slice_range)
        compat.clear_should_calc_clims(layer)
    elif layer.auto_contrast:
        layer.contrast_limits = response.slice_range


def _set_limits_from_slice(layer: Any, slice_range: tuple) -> None:
    """napari's first-slice limits: ``reset_contrast_limits()`` from the slice's range."""
    if np.issubdtype(np.dtype(layer.dtype), np.integer):
        layer.reset_contrast_limits_range()  # the dtype's limits: no data read
    else:
        layer.contrast_limits_range = slice_range
    layer.contrast_limits = slice_range
