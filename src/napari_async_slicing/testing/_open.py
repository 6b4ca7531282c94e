"""Open zarr data over HTTP through fsspec or obstore, using public zarr API only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import zarr
import zarr.storage

__all__ = ["open_remote_array", "open_remote_group", "open_remote_store"]

StoreKind = Literal["fsspec", "obstore"]


def open_remote_store(
    url: str,
    *,
    store: StoreKind = "fsspec",
    storage_options: Mapping[str, Any] | None = None,
    client_options: Mapping[str, Any] | None = None,
    retry_config: Mapping[str, Any] | None = None,
) -> zarr.storage.FsspecStore | zarr.storage.ObjectStore:
    """Return a read-only zarr store for an ``http(s)://`` URL.

    ``store="fsspec"`` uses ``FsspecStore.from_url`` (aiohttp) with optional
    ``storage_options``; ``store="obstore"`` wraps ``obstore.store.HTTPStore``
    with ``client_options`` (``allow_http`` is always set) and ``retry_config``.
    """
    if store == "fsspec":
        if client_options is not None or retry_config is not None:
            raise ValueError("client_options/retry_config only apply to store='obstore'")
        return zarr.storage.FsspecStore.from_url(
            url, storage_options=dict(storage_options or {}), read_only=True
        )
    if store == "obstore":
        if storage_options is not None:
            raise ValueError("storage_options only applies to store='fsspec'")
        from obstore.store import HTTPStore

        options = {"allow_http": True, **dict(client_options or {})}
        kwargs: dict[str, Any] = {"client_options": options}
        if retry_config is not None:
            kwargs["retry_config"] = dict(retry_config)
        return zarr.storage.ObjectStore(HTTPStore.from_url(url, **kwargs), read_only=True)
    raise ValueError(f"store must be 'fsspec' or 'obstore', not {store!r}")


def open_remote_array(
    url: str,
    *,
    store: StoreKind = "fsspec",
    zarr_format: Literal[2, 3] | None = None,
    **store_kwargs: Any,
) -> zarr.Array:
    """Open the zarr array at ``url`` read-only (see :func:`open_remote_store`)."""
    return zarr.open_array(open_remote_store(url, store=store, **store_kwargs), mode="r", zarr_format=zarr_format)


def open_remote_group(
    url: str,
    *,
    store: StoreKind = "fsspec",
    zarr_format: Literal[2, 3] | None = None,
    **store_kwargs: Any,
) -> zarr.Group:
    """Open the zarr group at ``url`` read-only (see :func:`open_remote_store`)."""
    return zarr.open_group(open_remote_store(url, store=store, **store_kwargs), mode="r", zarr_format=zarr_format)
