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

from napari_async_slicing import _napari_compat as compat
from napari_async_slicing._options import SlicingOptions


def default_options(**overrides: Any) -> SlicingOptions:
    """The options a slicer gets when none are given: those of ``enable()`` if it is in force,
    else ``NAPARI_ASYNC_SLICING_<NAME>`` environment variables over the built-in defaults."""
    import napari_async_slicing

    base = napari_async_slicing._enabled_options
    if base is None:
        return SlicingOptions.from_env(**overrides)
    return dataclasses.replace(base, **overrides)


def uses_our_slicer(viewer: Any) -> bool:
    return _is_ours(compat.layer_slicer(compat.unwrap_viewer(viewer)))


def enable_in(viewer: Any, options: SlicingOptions | None = None, **overrides: Any) -> Any:
    """Make a running viewer use our slicer (a new one if ``options`` differ); return it.

    The slicer in use is shut down (in-flight reads cancelled, threads stopped) and the current
    planes are sliced again by the new one. Without ``options``/``overrides`` a viewer that
    already uses our slicer keeps it.
    """
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
    swap_slicer(viewer, slicer)
    return slicer


def disable_in(viewer: Any) -> Any:
    """Make a running viewer use napari's own slicer again; return it."""

    viewer = compat.unwrap_viewer(viewer)
    if not uses_our_slicer(viewer):
        return compat.layer_slicer(viewer)
    slicer = compat.napari_slicer()
    swap_slicer(viewer, slicer)
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


# --- swapping the slicer of a running viewer ----------------------------------------------------


def _is_ours(slicer: Any) -> bool:
    return hasattr(slicer, 'attach_main_thread')


def connect_slicer(viewer: Any, slicer: Any, qt_viewer: Any | None) -> None:
    """Wire ``slicer`` into ``viewer``'s ``QtViewer`` as napari wires its own.

    Our slicer applies responses itself, on the main thread, only if still newest: napari's
    ``QtViewer._on_slice_ready`` is disconnected and the slicer is handed a main-thread caller.
    napari's slicer gets ``_on_slice_ready`` connected, as ``QtViewer.__init__`` does.
    """
    if qt_viewer is None:
        return
    if not _is_ours(slicer):
        compat.connect_napari_apply(slicer, qt_viewer)
        return
    from napari_async_slicing._qt import _loading_cue
    from napari_async_slicing._qt._main_thread import MainThreadCaller

    compat.disconnect_napari_apply(slicer, qt_viewer)
    slicer.attach_main_thread(MainThreadCaller(compat.canvas_widget_of_qt_viewer(qt_viewer)))
    _loading_cue.watch(viewer)


def shutdown_slicer(slicer: Any) -> None:
    """Shut ``slicer`` down without blocking the main thread on a read: ours cancels its reads
    (quick); napari's leaves its running read to end unseen on its own thread."""
    if _is_ours(slicer):
        slicer.shutdown()
    else:
        compat.stop_napari_slicer(slicer)


def slicer_threads_alive(slicer: Any) -> bool:
    """True while any of ``slicer``'s worker threads is still running."""
    executors = slicer.pools() if _is_ours(slicer) else compat.napari_slicer_executors(slicer)
    return any(t.is_alive() for ex in executors for t in list(getattr(ex, '_threads', ())))


def swap_slicer(viewer: Any, new_slicer: Any) -> Any:
    """Make a running ``viewer`` use ``new_slicer``; return the old one (shut down).

    The old slicer is disconnected first (so none of its in-flight responses is shown), then
    shut down (its reads cancelled or left to finish unseen: no thread left); the new one is
    wired as for a new viewer and the current dims are sliced again, so the canvas shows the
    current planes without a restart.
    """
    viewer = compat.unwrap_viewer(viewer)
    old = compat.layer_slicer(viewer)
    if old is new_slicer:
        return old
    if _is_ours(new_slicer):
        from napari_async_slicing._install import patch

        patch(type(new_slicer))
    qt_viewer = compat.qt_viewer_of(viewer)
    if qt_viewer is not None:
        compat.disconnect_napari_apply(old, qt_viewer)
    shutdown_slicer(old)
    compat.set_layer_slicer(viewer, new_slicer)
    connect_slicer(viewer, new_slicer, qt_viewer)
    reslice_all(viewer, new_slicer)
    return old


def reslice_all(viewer: Any, slicer: Any) -> None:
    """Slice every layer of ``viewer`` at the current dims again with ``slicer``."""
    layers = list(viewer.layers)
    if _is_ours(slicer):
        slicer.submit(layers=layers, dims=viewer.dims, force=True)
        return
    for layer in layers:
        compat.slice_again_with_napari(layer, viewer.dims)
