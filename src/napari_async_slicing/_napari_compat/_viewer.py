"""napari's viewers, windows, canvases and Qt widgets."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def layer_slicer(viewer: Any) -> Any:
    """The slicer a viewer (``Viewer`` or ``ViewerModel``) uses."""
    return viewer._layer_slicer


def set_layer_slicer(viewer: Any, slicer: Any) -> None:
    viewer._layer_slicer = slicer


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


def canvas_widget_of_qt_viewer(qt_viewer: Any) -> Any:
    """The Qt widget vispy draws a ``QtViewer``'s canvas in."""
    return qt_viewer.canvas.native


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


def canvas_current_first(original: Callable[[Any], None], applies: Callable[[Any], bool]) -> Any:
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
    VispyCanvas._clean_and_update_scenegraph = canvas_current_first(original, lambda _: True)
    try:
        yield
    finally:
        VispyCanvas._clean_and_update_scenegraph = original


def unwrap_viewer(viewer: Any) -> Any:
    """The viewer behind napari's ``PublicOnlyProxy`` (what plugin widgets are handed)."""
    return getattr(viewer, '__wrapped__', viewer)


def qt_viewer_of(viewer: Any) -> Any | None:
    """The ``QtViewer`` showing ``viewer``, or None for a bare ``ViewerModel``."""
    window = getattr(viewer, 'window', None)
    return getattr(window, '_qt_viewer', None)


def viewer_of_qt_viewer(qt_viewer: Any) -> Any:
    return qt_viewer.viewer


def viewer_of_window(window: Any) -> Any:
    """The viewer a napari ``Window`` shows."""
    return window._qt_viewer.viewer


def connect_napari_apply(slicer: Any, qt_viewer: Any) -> None:
    """What ``QtViewer.__init__`` wires for napari's slicer: its ``ready`` to ``_on_slice_ready``."""
    slicer.events.ready.connect(qt_viewer._on_slice_ready)


def disconnect_napari_apply(slicer: Any, qt_viewer: Any) -> None:
    slicer.events.ready.disconnect(qt_viewer._on_slice_ready)


def napari_slicer() -> Any:
    """A new napari ``_LayerSlicer`` (it reads the async preference into ``_force_sync``)."""
    from napari.components._layer_slicer import _LayerSlicer

    return _LayerSlicer()


def napari_slicer_executors(slicer: Any) -> list:
    """The thread pools of napari's ``_LayerSlicer``."""
    return [slicer._executor]


def stop_napari_slicer(slicer: Any) -> None:
    """Shut napari's slicer down without waiting for its running read (``_LayerSlicer.shutdown``
    would): its queued tasks are cancelled, the running one ends unseen on its own thread."""
    slicer._executor.shutdown(wait=False, cancel_futures=True)
    slicer.events.disconnect()
    slicer.events.ready.disconnect()


def notify_error(message: str) -> None:
    """Show ``message`` as napari's error notification (the message only, no traceback)."""
    from napari.utils.notifications import Notification, NotificationSeverity, notification_manager

    notification_manager.dispatch(Notification(message, severity=NotificationSeverity.ERROR))


# --- the layer list's loading cue --------------------------------------------------------------


def loaded_role() -> int:
    from napari._qt.containers.qt_layer_model import LoadedRole

    return LoadedRole


def layer_of_index(model: Any, index: Any) -> Any:
    """The layer at ``index`` of napari's layer list model."""
    return model.getItem(index)


def layer_list_loading_cue(viewer: Any, layer: Any) -> bool:
    """Whether the viewer's layer list paints ``layer`` as loading (its spinner) right now."""
    model = viewer.window._qt_viewer.layers.model().sourceModel()
    index = model.index(model._root.index(layer))
    return not model.data(index, loaded_role())


def layer_model_loaded_changed(model: Any, layer: Any) -> None:
    """Tell napari's layer list ``model`` that ``layer``'s loaded state changed (repaint it)."""
    try:
        row = model._root.index(layer)
    except ValueError:  # no longer in the list
        return
    index = model.index(row)
    try:
        model.dataChanged.emit(index, index, [loaded_role()])
    except RuntimeError:  # the model's Qt object is gone (viewer closed)
        pass


def vispy_transform_inputs(vispy_layer: Any) -> tuple:
    """What ``VispyBaseLayer._on_matrix_change`` computes the node transform from, besides the
    layer's transforms (whose changes reach it by their own events): the tile's placement
    (``tile2data``, set with each multiscale slice), the dims displayed, ndisplay, units, the
    node, and for 3D multiscale the level and the tile's corner."""
    layer = vispy_layer.layer
    slice_input = layer._slice_input
    tile = layer._transforms['tile2data']
    key: tuple = (
        id(layer._transforms),
        id(vispy_layer.node),
        tuple(slice_input.displayed),
        slice_input.ndisplay,
        layer.ndim,
        tuple(vispy_layer._world_to_layer_units_scale),
        tuple(tile.scale),
        tuple(tile.translate),
        tuple(tile.linear_matrix.ravel()),
    )
    if slice_input.ndisplay == 3 and getattr(layer, 'multiscale', False):
        key += (getattr(layer, 'data_level', 0), tuple(layer.corner_pixels[0]))
    return key


def viewer_of_canvas(canvas: Any) -> Any:
    """The viewer a ``VispyCanvas`` draws (None if it has none)."""
    return getattr(canvas, 'viewer', None)
