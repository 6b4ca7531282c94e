"""napari-async-slicing: a slicing subsystem for napari that never freezes the UI.

    import napari, napari_async_slicing
    napari_async_slicing.enable()      # every napari.Viewer created afterwards uses our slicer
    viewer = napari.Viewer()

See README.md and docs/naps/ for the design.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from napari_async_slicing._live import disable_in, enable_in
from napari_async_slicing._options import SlicingOptions
from napari_async_slicing._sync import sync_slicing

__version__ = '0.1.0'
__all__ = [
    'SlicingOptions',
    'disable',
    'disable_in',
    'enable',
    'enable_in',
    'enabled',
    'is_enabled',
    'sync_slicing',
]

#: The options ``enable()`` put in force (None: not enabled).
_enabled_options: SlicingOptions | None = None


def enable(**options: Any) -> SlicingOptions:
    """Make every ``napari.Viewer`` created from now on use our slicer.

    Keyword options (see :class:`SlicingOptions`) override ``NAPARI_ASYNC_SLICING_<NAME>``
    environment variables. Does not depend on napari's experimental async preference.
    Returns the options in force.
    """
    global _enabled_options
    from napari_async_slicing import _install
    from napari_async_slicing._memory import return_large_frees
    from napari_async_slicing.components._layer_slicer import AsyncLayerSlicer

    opts = SlicingOptions.from_env(**options)
    return_large_frees()
    _install.install(lambda: AsyncLayerSlicer(opts), AsyncLayerSlicer)
    _enabled_options = opts
    return opts


def disable() -> None:
    """Viewers created from now on use napari's own slicer again."""
    global _enabled_options
    from napari_async_slicing import _install

    _install.uninstall()
    _enabled_options = None


def is_enabled() -> bool:
    return _enabled_options is not None


@contextmanager
def enabled(**options: Any) -> Iterator[SlicingOptions]:
    """``enable(**options)`` for the duration of a ``with`` block, restoring the previous state."""
    previous = _enabled_options
    opts = enable(**options)
    try:
        yield opts
    finally:
        if previous is None:
            disable()
        else:
            enable(**{f: getattr(previous, f) for f in previous.__dataclass_fields__})
