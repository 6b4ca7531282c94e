"""What the slicer connects to a layer it slices, and disconnects when the layer leaves.

- napari 0.9's internal ``loaded`` signal is forwarded to ``layer.events.loaded`` (napari never
  wires it: the layer list's loading cue would not move);
- painting into a Labels layer writes into its data in place: its cached chunks must go.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from napari_async_slicing import _napari_compat as compat

_WRITE_EVENTS = ('paint', 'labels_update')


class LayerHooks:
    """Per layer: connected once (:meth:`watch`), disconnected by :meth:`unwatch`."""

    def __init__(self, data_changed: Callable[[Any], None]) -> None:
        self._data_changed = data_changed
        self._connected: weakref.WeakKeyDictionary[Any, tuple[Any, Any]] = weakref.WeakKeyDictionary()

    def watch(self, layer: Any) -> None:
        if layer in self._connected:
            return
        layer_ref = weakref.ref(layer)
        self._connected[layer] = (
            self._forward_loaded(layer, layer_ref),
            self._watch_writes(layer, layer_ref),
        )

    def unwatch(self, layer: Any) -> None:
        forward, written = self._connected.pop(layer, (None, None))
        signal = compat.loaded_signal(layer)
        if signal is not None and forward is not None:
            signal.disconnect(forward)
        events = getattr(layer, 'events', None)
        if events is not None and written is not None:
            for name in _WRITE_EVENTS:
                if hasattr(events, name):
                    getattr(events, name).disconnect(written)

    def layers(self) -> list[Any]:
        return list(self._connected.keys())

    def _forward_loaded(self, layer: Any, layer_ref: weakref.ReferenceType) -> Any:
        signal = compat.loaded_signal(layer)
        events = getattr(layer, 'events', None)
        if signal is None or events is None or not hasattr(events, 'loaded'):
            return None

        def forward() -> None:
            target = layer_ref()
            if target is not None:
                target.events.loaded(value=target.loaded)

        signal.connect(forward)
        return forward

    def _watch_writes(self, layer: Any, layer_ref: weakref.ReferenceType) -> Any:
        events = getattr(layer, 'events', None)
        if events is None:
            return None
        data_changed = self._data_changed

        def written(event: Any = None) -> None:
            target = layer_ref()
            if target is not None:
                data_changed(target)

        for name in _WRITE_EVENTS:
            if hasattr(events, name):
                getattr(events, name).connect(written)
        return written
