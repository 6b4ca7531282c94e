"""The layer list's loading cue, shown for loads that last.

It listens to ``layer.events.loaded`` (which our slicer makes napari fire) of the layers of
viewers our slicer serves (:func:`watch`). napari's layer list paints an animated spinner for every layer that is not loaded; while it runs,
each of its frames repaints the layer list in Python on the main thread (about 1 ms per layer,
~30 times a second), competing with the workers for the GIL just while they read. A remote step
that takes ~150 ms would flash the spinner on and off. So the layer list is told a layer is
loading only once it has been loading for ``CUE_DELAY_S``: ``layer.loaded`` and
``layer.events.loaded`` still change at once (napari's API), only the painting waits. During a
scrub a layer stays loading from step to step, so the cue appears after the delay and stays.
"""

from __future__ import annotations

import math
import time
import weakref
from typing import Any

from qtpy.QtCore import QTimer

from napari_async_slicing import _napari_compat as compat

#: How long a layer loads before the layer list shows it (a common threshold for spinners).
CUE_DELAY_S = 0.2

#: Layers loading now -> when they started (main thread).
_since: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: Layers whose cue is due to be painted (a timer is set).
_due: weakref.WeakSet = weakref.WeakSet()


#: Viewers whose layers' ``events.loaded`` the cue listens to.
_watched: weakref.WeakSet = weakref.WeakSet()


def watch(viewer: Any) -> None:
    """Listen to ``layer.events.loaded`` of the viewer's layers, now and as they come and go
    (a removed layer keeps nothing of ours connected)."""
    if viewer in _watched:
        return
    _watched.add(viewer)
    for layer in viewer.layers:
        layer.events.loaded.connect(_on_loaded)
    viewer.layers.events.inserted.connect(_on_inserted)
    viewer.layers.events.removed.connect(_on_removed)


def _on_inserted(event: Any) -> None:
    event.value.events.loaded.connect(_on_loaded)


def _on_removed(event: Any) -> None:
    event.value.events.loaded.disconnect(_on_loaded)
    _since.pop(event.value, None)


def _on_loaded(event: Any) -> None:
    loading_changed(event.source, bool(event.value))


def loading_changed(layer: Any, loaded: bool) -> None:
    """``layer`` started or stopped loading (main thread)."""
    if loaded:
        _since.pop(layer, None)
    elif layer not in _since:
        _since[layer] = time.monotonic()


def hides_cue(model: Any, layer: Any) -> bool:
    """True while ``layer`` loads for less than the delay; then ``model`` repaints its row."""
    since = _since.get(layer)
    if since is None:
        return False
    remaining = CUE_DELAY_S - (time.monotonic() - since)
    if remaining <= 0:
        return False
    if layer not in _due:
        _due.add(layer)
        model_ref, layer_ref = weakref.ref(model), weakref.ref(layer)
        QTimer.singleShot(math.ceil(remaining * 1000) + 1, lambda: _cue_due(model_ref, layer_ref))
    return True


def _cue_due(model_ref: weakref.ref, layer_ref: weakref.ref) -> None:
    layer, model = layer_ref(), model_ref()
    if layer is None:
        return
    _due.discard(layer)
    if model is not None and layer in _since:
        compat.layer_model_loaded_changed(model, layer)
