"""Installing our slicer into napari: what each patched napari seam does for viewers on our slicer.

Every patch acts only on viewers (and their layers) that use our slicer; viewers with napari's
own slicer are untouched. ``install`` also makes new viewers use our slicer; ``patch`` alone (a
live swap into a running viewer) does not. Which napari attributes are replaced is listed in
``_napari_compat._patches``; what replaces them is here.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from typing import Any

from napari_async_slicing import _napari_compat as compat
from napari_async_slicing._napari_compat import Patch
from napari_async_slicing.components import _registry

_SEAMS = 'seams'
_FACTORY = 'slicer factory'


def install(slicer_factory: Callable[[], Any], slicer_type: type) -> None:
    """Make every new viewer use ``slicer_factory`` and patch napari's seams for ``slicer_type``."""
    patch(slicer_type)
    compat.undo(_FACTORY)
    compat.install(_FACTORY, [Patch(compat.seams().slicer_attr, 'default_factory', lambda _: slicer_factory)])


def uninstall() -> None:
    """Undo :func:`install`: new viewers get napari's own slicer again."""
    compat.undo(_FACTORY)
    compat.undo(_SEAMS)


def patch(slicer_type: type) -> None:
    """Patch napari's seams for viewers that use ``slicer_type`` (once)."""
    if not compat.installed(_SEAMS):
        compat.install(_SEAMS, _patches(slicer_type))


def _patches(slicer_type: type) -> list[Patch]:
    def ours(slicer: Any) -> bool:
        return isinstance(slicer, slicer_type)

    seams = compat.seams()
    patches = [
        Patch(seams.QtViewer, '__init__', lambda original: _qtviewer_init(original, ours)),
        Patch(seams.Window, '_screenshot', lambda original: _window_screenshot(original, ours)),
        Patch(seams.Viewer, 'screenshot', lambda original: _with_wait_keyword(original, lambda v: v)),
        Patch(
            seams.Window, 'screenshot', lambda original: _with_wait_keyword(original, compat.viewer_of_window)
        ),
        Patch(seams.Layer, 'refresh', _layer_refresh),
        Patch(seams.LayerType, '__call__', _layer_construct),
        Patch(seams.ViewerModel, '_on_add_layer', lambda original: _on_add_layer(original, ours)),
        Patch(seams.ViewerModel, '_on_remove_layer', lambda original: _on_remove_layer(original, ours)),
        Patch(seams.QtLayerListModel, 'data', _layer_model_data),
        Patch(seams.vispy_scalar_field, 'fix_data_dtype', _prepared_texture_first),
        Patch(seams.VispyBaseLayer, '_on_matrix_change', _matrix_change_when_moved),
        Patch(seams.ViewerModel, 'sync_slicing', lambda original: original or _sync_slicing()),
        *(Patch(module, 'get_dtype', _labels_dtype_from_metadata) for module in seams.get_dtype_modules),
    ]
    if '_clean_and_update_scenegraph' in vars(seams.VispyCanvas):
        # napari 0.9.2 crash on layer removal (issue 8, see canvas_current_on_layer_removal).
        patches.append(
            Patch(
                seams.VispyCanvas,
                '_clean_and_update_scenegraph',
                lambda original: compat.canvas_current_first(
                    original,
                    lambda canvas: ours(getattr(compat.viewer_of_canvas(canvas), '_layer_slicer', None)),
                ),
            )
        )
    return patches


def _sync_slicing() -> Callable[..., Any]:
    from napari_async_slicing._sync import sync_slicing

    return sync_slicing


def _qtviewer_init(original: Callable[..., None], ours: Callable[[Any], bool]) -> Callable[..., None]:
    @functools.wraps(original)
    def qtviewer_init(self: Any, viewer: Any, *args: Any, **kwargs: Any) -> None:
        original(self, viewer, *args, **kwargs)
        slicer = compat.layer_slicer(viewer)
        if ours(slicer):
            from napari_async_slicing._live import connect_slicer

            connect_slicer(viewer, slicer, self)

    return qtviewer_init


def _window_screenshot(original: Callable[..., Any], ours: Callable[[Any], bool]) -> Callable[..., Any]:
    @functools.wraps(original)
    def window_screenshot(self: Any, *args: Any, **kwargs: Any) -> Any:
        # napari only waits for slicing on canvas-only screenshots; wait for whole-window ones too.
        slicer = compat.layer_slicer(compat.viewer_of_window(self))
        if ours(slicer) and not kwargs.get('canvas_only', False):
            slicer.wait_until_idle(timeout=slicer.screenshot_timeout)
        return original(self, *args, **kwargs)

    return window_screenshot


def _with_wait_keyword(method: Callable[..., Any], viewer_of: Callable[[Any], Any]) -> Callable[..., Any]:
    """Add ``wait_for_slices=True`` to a screenshot method (False takes it without waiting)."""

    @functools.wraps(method)
    def screenshot(self: Any, *args: Any, wait_for_slices: bool = True, **kwargs: Any) -> Any:
        slicer = compat.layer_slicer(viewer_of(self))
        if wait_for_slices or not hasattr(slicer, 'no_wait'):
            return method(self, *args, **kwargs)
        with slicer.no_wait():
            return method(self, *args, **kwargs)

    return screenshot


class _Constructing(threading.local):
    depth = 0


#: How many layer constructors are running on this thread.
_constructing = _Constructing()


def _layer_construct(original: Callable[..., Any]) -> Callable[..., Any]:
    def layer_construct(cls: Any, *args: Any, **kwargs: Any) -> Any:
        # napari's layer metaclass runs ``_post_init`` (which refreshes = slices) after __init__.
        _constructing.depth += 1
        try:
            return original(cls, *args, **kwargs)
        finally:
            _constructing.depth -= 1

    return layer_construct


def _layer_refresh(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def layer_refresh(self: Any, event: Any = None, **kwargs: Any) -> None:
        slicer = _registry.managing_slicer(self)
        extent = kwargs.get('extent', True)
        if slicer is None and _constructing.depth and not compat.in_memory_data(self):
            # Deferred first render: a new layer over lazy (remote) data is not sliced at
            # construction (napari would read plane 0 on the main thread); the viewer slices it,
            # at the step dims asks for, once it is added.
            compat.refresh_sync(self, extent)
            return None
        if (
            slicer is None
            or not kwargs.get('data_displayed', True)
            or compat.refresh_blocked(self)
            or slicer._force_sync
        ):
            return original(self, event, **kwargs)
        # Route data refreshes through the slicer (as napari's async path does) so a
        # synchronous main-thread slice never races an in-flight response.
        if extent:
            # A user's ``layer.refresh()`` says the data changed; napari's own view updates
            # (multiscale level, contrast) pass ``extent=False`` and keep the chunk cache.
            slicer.data_changed(self)
        compat.refresh_sync(self, extent)
        self.events.reload(layer=self)
        return None

    return layer_refresh


def _on_add_layer(original: Callable[..., Any], ours: Callable[[Any], bool]) -> Callable[..., Any]:
    @functools.wraps(original)
    def on_add_layer(self: Any, event: Any) -> Any:
        # napari slices a new layer at the current dims, then (first layer) moves dims to the
        # centre: start reads only once dims have settled, so plane 0 is never requested.
        slicer = compat.layer_slicer(self)
        if not ours(slicer):
            return original(self, event)
        # Route the layer's refreshes through our slicer from now on: napari's first canvas
        # draw after the dims sliders change refreshes (slices) multiscale layers.
        _registry.manage(event.value, slicer)
        with slicer.deferred():
            return original(self, event)

    return on_add_layer


def _on_remove_layer(original: Callable[..., Any], ours: Callable[[Any], bool]) -> Callable[..., Any]:
    @functools.wraps(original)
    def on_remove_layer(self: Any, event: Any) -> None:
        # A layer that leaves the viewer keeps nothing of ours: reads stopped, callbacks off.
        original(self, event)
        slicer = compat.layer_slicer(self)
        if ours(slicer) and not slicer.is_shut_down:
            slicer.forget(event.value)

    return on_remove_layer


def _layer_model_data(original: Callable[..., Any]) -> Callable[..., Any]:
    loaded_role = compat.loaded_role()

    @functools.wraps(original)
    def layer_model_data(self: Any, index: Any, *args: Any, **kwargs: Any) -> Any:
        value = original(self, index, *args, **kwargs)
        role = args[0] if args else kwargs.get('role')
        if role == loaded_role and not value and index.isValid():
            from napari_async_slicing._qt._loading_cue import hides_cue

            # The loading spinner of layers our slicer manages waits for loads that last.
            layer = compat.layer_of_index(self, index)
            if _registry.managing_slicer(layer) is not None and hides_cue(self, layer):
                return True
        return value

    return layer_model_data


def _prepared_texture_first(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """vispy's dtype cast before upload, skipped for a slice whose texture a worker prepared."""
    from napari_async_slicing.layers._slice._scalar_field import prepared_texture

    @functools.wraps(original)
    def fix_data_dtype(data: Any) -> Any:
        texture = prepared_texture(data)
        return original(data) if texture is None else texture

    return fix_data_dtype


def _matrix_change_when_moved(original: Callable[[Any], None]) -> Callable[[Any], None]:
    """napari's node transform update, skipped inside our apply when nothing it depends on
    moved since it last ran (``layers._slice._transforms``)."""
    from napari_async_slicing.layers._slice._transforms import in_apply

    computed: weakref.WeakKeyDictionary[Any, tuple] = weakref.WeakKeyDictionary()

    @functools.wraps(original)
    def on_matrix_change(self: Any) -> None:
        try:
            key = compat.vispy_transform_inputs(self)
        except Exception:  # noqa: BLE001 - a layer type without a tile: napari's way
            original(self)
            return
        if in_apply() and computed.get(self) == key:
            return
        original(self)
        computed[self] = compat.vispy_transform_inputs(self)

    return on_matrix_change


def _labels_dtype_from_metadata(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The Labels layer's dtype from metadata (napari 0.9.2's ``get_dtype`` reads plane 0 for it)."""

    @functools.wraps(original)
    def get_dtype(layer: Any) -> Any:
        dtype = getattr(layer.data, 'dtype', None)
        return dtype if dtype is not None else original(layer)

    return get_dtype
