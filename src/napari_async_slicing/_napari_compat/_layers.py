"""napari's layers: their slicing state, refresh, and the dims they are sliced at."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari.layers import Layer


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


def refresh_after_apply(layer: Layer, thumbnail: bool = True) -> None:
    """What napari's ``QtViewer._on_slice_ready`` does after updating the slice state (the
    thumbnail only if ``thumbnail``)."""
    events = getattr(layer, 'events', None)
    if events is not None and hasattr(events, 'set_data'):
        events.set_data()
    refresh = getattr(layer, '_refresh_sync', None)
    if refresh is not None:
        refresh(data_displayed=False, thumbnail=thumbnail, highlight=True, extent=False)


def update_thumbnail(layer: Layer) -> None:
    """napari's thumbnail update from the layer's current slice."""
    layer._update_thumbnail()


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


def refresh_blocked(layer: Layer) -> bool:
    return bool(layer._refresh_blocked)


def refresh_sync(layer: Layer, extent: bool) -> None:
    """napari's synchronous refresh of what is not data (extent, thumbnail, highlight), forced."""
    layer._refresh_sync(extent=extent, force=True)


def slice_again_with_napari(layer: Layer, dims: Any) -> None:
    """Slice ``layer`` at ``dims`` with napari's own slicer: set the slice input (a forced
    ``_slice_dims`` skips the view slice), then ``refresh`` slices now or submits a reload."""
    layer._slicing_state.set_slice_input_from_dims(dims, force=True)
    layer.refresh()


def in_memory_data(layer: Layer) -> bool:
    """True if the layer's data (every level, if multiscale) is in memory (numpy; Shapes' lists,
    Surface's tuples)."""
    return all(isinstance(data, np.ndarray | list | tuple) for data in data_arrays(layer))


def layer_axis(layer: Layer, world_axis: int, ndim_world: int) -> int | None:
    """The layer's data axis for a world (dims) axis, or None if the layer does not have it
    (napari aligns a layer's axes with the last ones of the world: ``_world_to_layer_dims``)."""
    axis = world_axis - (ndim_world - layer.ndim)
    return axis if 0 <= axis < layer.ndim else None


# --- dims ----------------------------------------------------------------------------------


def dims_signature(dims: Any, with_step: bool = False) -> tuple:
    """What a slice of ``dims`` depends on: everything but the step (``with_step``: and the
    step and point too)."""
    signature: tuple = (
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
