"""Per-layer-type slicing: turn napari's by-value request into one our workers can run.

Each module handles one family of layer types. :func:`prepare` returns a request with the same
``id`` whose data access is cancellable (see :mod:`napari_async_slicing._reading`); layers not
listed keep napari's own request unchanged.
"""

from __future__ import annotations

from typing import Any

from napari_async_slicing.layers._slice import _scalar_field


def prepare(request: Any) -> Any:
    """Return ``request`` with its data routed through cancellable reads, where that applies."""
    if _scalar_field.handles(request):
        return _scalar_field.prepare(request)
    return request


def is_heavy(request: Any) -> bool:
    """Heavy work (3D volumes) runs on its own bounded slots so 2D planes are never starved."""
    slice_input = getattr(request, 'slice_input', None)
    return getattr(slice_input, 'ndisplay', 2) == 3
