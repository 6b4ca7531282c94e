"""The napari attributes we replace, and the one loop that installs and undoes replacements.

A :class:`Patch` names an owner (a napari class or module), an attribute, and how to wrap what
napari has there. What each wrapper does is ours (``napari_async_slicing._install``); which
napari objects are patched is napari's, so it is listed here (:func:`seams`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any


@dataclass(frozen=True)
class Patch:
    """Replace ``owner.name`` with ``wrap(original)`` (``original`` is None if it has none)."""

    owner: Any
    name: str
    wrap: Callable[[Any], Any]


#: group -> [(owner, name, original, owned)]: what ``install`` replaced, to undo it.
_installed: dict[str, list[tuple[Any, str, Any, bool]]] = {}


def install(group: str, patches: Iterable[Patch]) -> None:
    """Apply ``patches`` as ``group`` (once: a group already installed is left as it is)."""
    if group in _installed:
        return
    done = _installed[group] = []
    for patch in patches:
        try:
            owned = patch.name in vars(patch.owner)
        except TypeError:  # no __dict__ (slots): the attribute is its own
            owned = True
        original = getattr(patch.owner, patch.name, None)
        setattr(patch.owner, patch.name, patch.wrap(original))
        done.append((patch.owner, patch.name, original, owned))


def undo(group: str) -> None:
    """Put back what ``install`` replaced for ``group`` (in reverse order)."""
    for owner, name, original, owned in reversed(_installed.pop(group, [])):
        if owned:
            setattr(owner, name, original)
        else:
            delattr(owner, name)


def installed(group: str) -> bool:
    return group in _installed


def seams() -> SimpleNamespace:
    """The napari objects our patches replace attributes of (napari 0.9.2)."""
    from napari._qt.containers.qt_layer_model import QtLayerListModel
    from napari._qt.qt_main_window import Window
    from napari._qt.qt_viewer import QtViewer
    from napari._vispy.canvas import VispyCanvas
    from napari._vispy.layers import scalar_field
    from napari._vispy.layers.base import VispyBaseLayer
    from napari.components import ViewerModel
    from napari.layers import Layer
    from napari.layers.labels import _labels_utils
    from napari.viewer import Viewer

    get_dtype = _labels_utils.get_dtype
    return SimpleNamespace(
        QtViewer=QtViewer,  # __init__ wires the slicer's ready event to its _on_slice_ready
        Window=Window,  # _screenshot (whole window: napari does not wait), screenshot
        Viewer=Viewer,  # screenshot
        Layer=Layer,  # refresh
        LayerType=type(Layer),  # __call__ (runs _post_init, which slices a new layer)
        ViewerModel=ViewerModel,  # _on_add_layer, _on_remove_layer, sync_slicing
        QtLayerListModel=QtLayerListModel,  # data (LoadedRole: the loading spinner)
        VispyCanvas=VispyCanvas,  # _clean_and_update_scenegraph (GL clean-up on layer removal)
        vispy_scalar_field=scalar_field,  # fix_data_dtype (the cast before texture upload)
        VispyBaseLayer=VispyBaseLayer,  # _on_matrix_change (the node transform, at every new slice)
        # The Labels controls read a layer's dtype through get_dtype (plane 0 for lazy data),
        # imported by name into several modules.
        get_dtype_modules=[
            module
            for name, module in list(sys.modules.items())
            if name.startswith('napari') and getattr(module, 'get_dtype', None) is get_dtype
        ],
        # The default factory of ViewerModel's private ``_layer_slicer``.
        slicer_attr=ViewerModel.__private_attributes__['_layer_slicer'],
    )
