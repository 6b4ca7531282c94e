"""Open zarr data over HTTP through fsspec or obstore, using public zarr API only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import zarr
import zarr.storage

__all__ = ['open_remote_array', 'open_remote_group', 'open_remote_store']

StoreKind = Literal['fsspec', 'obstore']


def open_remote_store(
    url: str,
    *,
    store: StoreKind = 'fsspec',
    storage_options: Mapping[str, Any] | None = None,
    client_options: Mapping[str, Any] | None = None,
    retry_config: Mapping[str, Any] | None = None,
) -> zarr.storage.FsspecStore | zarr.storage.ObjectStore:
    """Return a read-only zarr store for an ``http(s)://`` URL, configured exactly as given
    (no defaults added; see :func:`napari_async_slicing._io.open_http_store`)."""
    from napari_async_slicing._io import open_http_store

    return open_http_store(
        url,
        store=store,
        storage_options=storage_options,
        client_options=client_options,
        retry_config=retry_config,
    )


def open_remote_array(
    url: str,
    *,
    store: StoreKind = 'fsspec',
    zarr_format: Literal[2, 3] | None = None,
    **store_kwargs: Any,
) -> zarr.Array:
    """Open the zarr array at ``url`` read-only (see :func:`open_remote_store`)."""
    return zarr.open_array(
        open_remote_store(url, store=store, **store_kwargs), mode='r', zarr_format=zarr_format
    )


def open_remote_group(
    url: str,
    *,
    store: StoreKind = 'fsspec',
    zarr_format: Literal[2, 3] | None = None,
    **store_kwargs: Any,
) -> zarr.Group:
    """Open the zarr group at ``url`` read-only (see :func:`open_remote_store`)."""
    return zarr.open_group(
        open_remote_store(url, store=store, **store_kwargs), mode='r', zarr_format=zarr_format
    )
