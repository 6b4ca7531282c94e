"""An apply need not recompute a layer's vispy transform when nothing it depends on moved.

napari's vispy layers recompute their node transform on every new slice
(``_on_data_change`` calls ``_on_matrix_change``: the layer's whole transform chain simplified and
sliced), which is most of the main-thread cost of showing a plane. A change of the layer's
transforms reaches the vispy layer by its own events (scale, translate, rotate, shear, affine),
which always recompute; what changes with a slice is the tile's placement (multiscale), the dims
displayed, ndisplay and the node. Inside :func:`applying`, ``_on_matrix_change`` is skipped when
none of those changed since it last ran for that vispy layer (see ``_install``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _Applying(threading.local):
    depth = 0


_applying = _Applying()


@contextmanager
def applying() -> Iterator[None]:
    """Inside the block, our apply hands a slice to the vispy layers."""
    _applying.depth += 1
    try:
        yield
    finally:
        _applying.depth -= 1


def in_apply() -> bool:
    return _applying.depth > 0
