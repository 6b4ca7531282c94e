"""Turn our slicer on or off in a running viewer, and change its options live.

    napari_async_slicing.enable_in(viewer, workers=4)   # this viewer, now, no restart
    napari_async_slicing.disable_in(viewer)             # back to napari's own slicer

``enable()`` is for viewers created afterwards; these act on one viewer that is already open (the
plugin widget uses them). Options given to ``enable_in`` apply to that viewer only;
:func:`make_default` makes options the defaults for the rest of the session.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from napari_async_slicing._options import SlicingOptions


def default_options(**overrides: Any) -> SlicingOptions:
    """The options a slicer gets when none are given: those of ``enable()`` if it is in force,
    else ``NAPARI_ASYNC_SLICING_<NAME>`` environment variables over the built-in defaults."""
    import napari_async_slicing

    base = napari_async_slicing._options
    if base is None:
        return SlicingOptions.from_env(**overrides)
    return dataclasses.replace(base, **overrides)


def uses_our_slicer(viewer: Any) -> bool:
    from napari_async_slicing._napari_compat import layer_slicer, unwrap_viewer
    from napari_async_slicing.components._layer_slicer import AsyncLayerSlicer

    return isinstance(layer_slicer(unwrap_viewer(viewer)), AsyncLayerSlicer)


def enable_in(viewer: Any, options: SlicingOptions | None = None, **overrides: Any) -> Any:
    """Make a running viewer use our slicer (a new one if ``options`` differ); return it.

    The slicer in use is shut down (in-flight reads cancelled, threads stopped) and the current
    planes are sliced again by the new one. Without ``options``/``overrides`` a viewer that
    already uses our slicer keeps it.
    """
    from napari_async_slicing import _napari_compat as compat
    from napari_async_slicing.components._layer_slicer import AsyncLayerSlicer

    viewer = compat.unwrap_viewer(viewer)
    current = compat.layer_slicer(viewer)
    if options is None:
        if isinstance(current, AsyncLayerSlicer) and not overrides:
            return current
        options = default_options(**overrides)
    elif overrides:
        options = dataclasses.replace(options, **overrides)
    if isinstance(current, AsyncLayerSlicer) and current.options == options:
        return current
    slicer = AsyncLayerSlicer(options)
    compat.swap_slicer(viewer, slicer)
    return slicer


def disable_in(viewer: Any) -> Any:
    """Make a running viewer use napari's own slicer again; return it."""
    from napari_async_slicing import _napari_compat as compat

    viewer = compat.unwrap_viewer(viewer)
    if not uses_our_slicer(viewer):
        return compat.layer_slicer(viewer)
    slicer = compat.napari_slicer()
    compat.swap_slicer(viewer, slicer)
    return slicer


def make_default(options: SlicingOptions) -> None:
    """Make ``options`` the defaults for the rest of this Python session.

    They are written to the ``NAPARI_ASYNC_SLICING_<NAME>`` environment variables of this process
    (which ``SlicingOptions.from_env`` reads, and child processes inherit), and if ``enable()`` is
    in force, viewers created from now on get them. Nothing is written to disk: a new session
    starts from the environment it is given.
    """
    import napari_async_slicing

    for f in dataclasses.fields(SlicingOptions):
        value = getattr(options, f.name)
        os.environ[f'NAPARI_ASYNC_SLICING_{f.name.upper()}'] = '' if value is None else str(value)
    if napari_async_slicing.is_enabled():
        napari_async_slicing.enable(**dataclasses.asdict(options))
