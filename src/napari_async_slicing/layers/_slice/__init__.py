"""Per-layer-type slicing: turn napari's by-value request into one our workers can run.

Each module handles one family of layer types. :func:`prepare` (worker side, before the request
runs) returns a request with the same ``id`` whose data access is cancellable (see
:mod:`napari_async_slicing._reading`); :func:`apply` (main thread) hands a response to its layer.
Layers not listed keep napari's own request and apply path unchanged.

Layer types napari 0.9 slices synchronously (Shapes, Tracks) get requests built by our own
modules (:func:`make_request`); a module says per step whether it can slice it off the main thread
(:func:`is_async_sliceable`). Any other layer without napari's async request (plugin-defined
types, subclasses) is sliced by napari's synchronous path, on its own, as before.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from napari_async_slicing import _napari_compat as compat
from napari_async_slicing._reading import LazySource
from napari_async_slicing.layers._slice import _scalar_field, _shapes, _tracks
from napari_async_slicing.layers._slice._transforms import applying

#: Modules that build their own requests for layer types napari slices synchronously.
_LAYER_MODULES = (_shapes, _tracks)


def _module_for(layer: Any) -> Any:
    for module in _LAYER_MODULES:
        if module.handles_layer(layer):
            return module
    return None


def is_async_sliceable(layer: Any, dims: Any) -> bool:
    """True if this step of ``layer`` can be sliced off the main thread."""
    module = _module_for(layer)
    if module is not None:
        return module.can_slice(layer, dims)
    return compat.is_async_sliceable(layer)


def make_request(layer: Any, dims: Any) -> Any:
    """Main thread: a by-value request for ``layer`` at ``dims`` (ours, else napari's)."""
    module = _module_for(layer)
    if module is not None:
        return module.make_request(layer, dims)
    return compat.make_slice_request(layer, dims)


def prepare(request: Any, layer: Any = None) -> Any:
    """Return ``request`` with its data routed through cancellable reads, where that applies.

    ``layer`` (main thread, at submit) lets a layer type capture display settings by value so the
    worker can also compute what is shown.
    """
    if _scalar_field.handles(request):
        return _scalar_field.prepare(request, layer)
    return request


def apply(layer: Any, response: Any, thumbnail: bool = True) -> None:
    """Main thread: show ``response`` on ``layer`` (what napari's ``QtViewer._on_slice_ready``
    does); its thumbnail too unless ``thumbnail`` is False (then :func:`update_thumbnail` later)."""
    module = _module_for(layer)
    with applying():
        if module is not None:
            module.apply(layer, response, thumbnail)
        elif _scalar_field.handles_response(response):
            _scalar_field.apply(layer, response, thumbnail)
        else:
            compat.update_slice_response(layer, response)
            compat.refresh_after_apply(layer, thumbnail)


def update_thumbnail(layer: Any, response: Any) -> None:
    """Main thread: the thumbnail of the slice ``response`` showed (applied without it)."""
    module = _module_for(layer)
    if module is not None:
        module.update_thumbnail(layer, response)
    else:
        compat.update_thumbnail(layer)


def in_memory(request: Any) -> bool:
    """True if the request reads no lazy data (nothing to wait for, nothing to cancel)."""
    if not dataclasses.is_dataclass(request):
        return False
    return not any(isinstance(getattr(request, f.name), LazySource) for f in dataclasses.fields(request))


#: A fast in-memory slice (NAP-4: skip the delay) that was never measured is recognised by the
#: bytes it touches: at most this many (a 512² float32 plane) slice in a few milliseconds.
FAST_SLICE_BYTES = 1 << 20


def work_bytes(request: Any) -> int | None:
    """Roughly how many bytes computing ``request`` touches, or None if unknown or lazy.

    Image and Labels: the plane (or volume) shown, not the whole array; other layer types: the
    numpy arrays the request holds (napari slices them whole). A request that holds another
    array-like (a plugin's, a wrapper) or no array at all is of unknown cost.
    """
    if not in_memory(request):
        return None
    if _scalar_field.handles(request):
        return _scalar_field.work_bytes(request)
    if hasattr(request, 'work_bytes'):
        return request.work_bytes()
    values = [getattr(request, f.name) for f in dataclasses.fields(request)]
    if any(_foreign_array(v) for v in values):
        return None
    arrays = [a for v in values for a in _arrays(v)]
    return sum(a.nbytes for a in arrays) if arrays else None


def _foreign_array(value: Any) -> bool:
    """An array-like that is not numpy (its reads may be slow or block)."""
    return not isinstance(value, np.ndarray) and hasattr(value, 'shape') and hasattr(value, 'dtype')


def _arrays(value: Any) -> list[np.ndarray]:
    """The numpy arrays in a request field (itself, or the items of a small tuple / list)."""
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, list | tuple) and len(value) <= 64:
        return [v for v in value if isinstance(v, np.ndarray)]
    return []


def slice_kind(request: Any) -> tuple:
    """What a measured slicing time of a layer holds for: the data it reads (by identity), the
    dims order and ndisplay. A new ``layer.data`` or a new order / ndisplay is measured anew."""
    slice_input = getattr(request, 'slice_input', None)
    data = (
        tuple(
            id(value)
            for f in dataclasses.fields(request)
            if isinstance(value := getattr(request, f.name), np.ndarray)
            and value.size > 1024  # not small per-request arrays (corner pixels, slice keys)
        )
        if dataclasses.is_dataclass(request)
        else ()
    )
    return (getattr(slice_input, 'ndisplay', None), tuple(getattr(slice_input, 'order', ())), data)


def is_heavy(request: Any) -> bool:
    """Heavy work (3D volumes) runs on its own bounded slots so 2D planes are never starved."""
    slice_input = getattr(request, 'slice_input', None)
    return getattr(slice_input, 'ndisplay', 2) == 3
