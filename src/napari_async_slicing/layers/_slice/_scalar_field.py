"""Image and Labels: napari's scalar-field request with cancellable, retrying data reads."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from napari_async_slicing._reading import LazySource

_DATA_FIELDS = ('data_at_data_level', 'data_at_thumbnail_level')


def handles(request: Any) -> bool:
    return dataclasses.is_dataclass(request) and all(
        hasattr(request, name) for name in _DATA_FIELDS
    )


def _lazy(data: Any) -> Any:
    # In-memory numpy needs neither cancellation nor retries: keep napari's fast path.
    if isinstance(data, np.ndarray | LazySource) or not hasattr(data, 'shape'):
        return data
    return LazySource(data)


def prepare(request: Any) -> Any:
    changes = {name: _lazy(getattr(request, name)) for name in _DATA_FIELDS}
    if all(changes[name] is getattr(request, name) for name in _DATA_FIELDS):
        return request
    return dataclasses.replace(request, **changes)
