"""Image and Labels: napari's scalar-field request with cancellable, retrying data reads."""

from __future__ import annotations

import dataclasses
from contextlib import AbstractContextManager, nullcontext
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


def _unfused_dask() -> AbstractContextManager:
    """napari's dask setting for slicing (no task fusion) without its shared dask cache.

    napari's ``configure_dask`` also activates one global ``dask.cache.Cache``, which fails with
    ``KeyError`` on task keys when two computes of the same graph overlap — as they do here when a
    superseded read winds down while the newest runs. Our own chunk cache replaces it.
    """
    try:
        import dask
    except ImportError:  # pragma: no cover
        return nullcontext()
    return dask.config.set({'optimization.fuse.active': False})


def prepare(request: Any) -> Any:
    changes: dict[str, Any] = {name: _lazy(getattr(request, name)) for name in _DATA_FIELDS}
    if all(changes[name] is getattr(request, name) for name in _DATA_FIELDS):
        return request
    if hasattr(request, 'dask_indexer'):
        changes['dask_indexer'] = _unfused_dask
    return dataclasses.replace(request, **changes)
