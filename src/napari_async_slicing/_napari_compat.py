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
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari.layers import Layer

# --- viewers -----------------------------------------------------------------------------


def layer_slicer(viewer: Any) -> Any:
    """The slicer a viewer (``Viewer`` or ``ViewerModel``) uses."""
    return viewer._layer_slicer


def vispy_node(viewer: Any, layer: Any) -> Any:
    """The vispy node napari hands a layer's sliced data to (for measuring what is shown)."""
    return viewer.window._qt_viewer.layer_to_visual[layer].node


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


def dims_nsteps(dims: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in dims.nsteps)


def default_scrub_axis(dims: Any) -> int | None:
    """The slider a user most likely moves next: the innermost non-displayed axis."""
    axes = tuple(dims.not_displayed)
    return axes[-1] if axes else None


def next_request_id() -> int:
    from napari.layers.base._slice import _next_request_id

    return _next_request_id()


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
    if _saved:
        _saved['factory_attr'].default_factory = slicer_factory
        return
    from napari._qt.qt_main_window import Window
    from napari._qt.qt_viewer import QtViewer
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
        had_sync_slicing='sync_slicing' in ViewerModel.__dict__,
    )
    attr.default_factory = slicer_factory

    orig_init = _saved['qtviewer_init']

    @functools.wraps(orig_init)
    def qtviewer_init(self: Any, viewer: Any, *args: Any, **kwargs: Any) -> None:
        orig_init(self, viewer, *args, **kwargs)
        slicer = viewer._layer_slicer
        if isinstance(slicer, slicer_type):
            # Our slicer applies responses itself, on the main thread, only if still newest.
            slicer.events.ready.disconnect(self._on_slice_ready)
            slicer.attach_main_thread()
            viewer.layers.events.removed.connect(lambda event: slicer.forget(event.value))

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
    if not _saved['had_sync_slicing'] and 'sync_slicing' in ViewerModel.__dict__:
        delattr(ViewerModel, 'sync_slicing')
    _saved.clear()


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
