"""``viewer.sync_slicing()``: slice synchronously inside a block (for scripts and screenshots)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def sync_slicing(viewer: Any) -> Iterator[None]:
    """Inside the block every slice is computed and applied before control returns.

    Pending asynchronous slices are finished and applied first, so the state inside the block
    is exactly what dims asks for::

        with viewer.sync_slicing():
            viewer.dims.current_step = (10, 0, 0)
            viewer.screenshot('plane10.png')

    Works with napari's own slicer too (it then uses napari's ``force_sync``).
    """
    from napari_async_slicing._napari_compat import layer_slicer

    slicer = layer_slicer(viewer)
    block = slicer.sync_slicing() if hasattr(slicer, 'sync_slicing') else slicer.force_sync()
    with block:
        yield
