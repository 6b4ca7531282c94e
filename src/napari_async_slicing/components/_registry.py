"""Which of our slicers manages a layer (so ``Layer.refresh`` is routed through it)."""

from __future__ import annotations

import weakref
from typing import Any

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
    """The live slicer managing ``layer``, or None."""
    slicer = _managed.get(layer)
    if slicer is None or slicer.is_shut_down:
        return None
    return slicer
