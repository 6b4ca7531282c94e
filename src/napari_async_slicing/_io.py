"""Open local or HTTP zarr / OME-Zarr (v3) for napari: metadata only, no chunk reads."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import zarr


def is_url(path: str) -> bool:
    return path.startswith(('http://', 'https://'))


def open_http_store(
    url: str,
    *,
    store: str = 'obstore',
    storage_options: Mapping[str, Any] | None = None,
    client_options: Mapping[str, Any] | None = None,
    retry_config: Mapping[str, Any] | None = None,
) -> Any:
    """A read-only zarr store for an ``http(s)://`` URL, exactly as configured.

    ``store='fsspec'`` uses ``FsspecStore.from_url`` (aiohttp) with ``storage_options``;
    ``store='obstore'`` wraps ``obstore.store.HTTPStore`` with ``client_options`` (``allow_http``
    always set) and ``retry_config``.
    """
    if store == 'fsspec':
        if client_options is not None or retry_config is not None:
            raise ValueError("client_options/retry_config only apply to store='obstore'")
        return zarr.storage.FsspecStore.from_url(
            url, storage_options=dict(storage_options or {}), read_only=True
        )
    if store == 'obstore':
        if storage_options is not None:
            raise ValueError("storage_options only applies to store='fsspec'")
        from obstore.store import HTTPStore

        kwargs: dict[str, Any] = {'client_options': {'allow_http': True, **dict(client_options or {})}}
        if retry_config is not None:
            kwargs['retry_config'] = dict(retry_config)
        return zarr.storage.ObjectStore(HTTPStore.from_url(url, **kwargs), read_only=True)
    raise ValueError(f"store must be 'obstore' or 'fsspec', not {store!r}")


def open_store(path_or_url: str, *, store: str = 'obstore') -> Any:
    """A read-only zarr store for a path or URL, with our defaults for remote reads.

    Over HTTP, obstore (default) retries 5xx itself; we bound it (its default of 10 retries turns
    one stalled request into 10 x the timeout).
    """
    if not is_url(path_or_url):
        return zarr.storage.LocalStore(path_or_url, read_only=True)
    if store == 'obstore':
        return open_http_store(
            path_or_url,
            store='obstore',
            client_options={'timeout': '20s'},
            retry_config={'max_retries': 3, 'retry_timeout': timedelta(seconds=30)},
        )
    return open_http_store(path_or_url, store=store)


def open_image(path_or_url: str, *, store: str = 'obstore') -> tuple[Any, dict[str, Any]]:
    """Return ``(data, add_image kwargs)``: an array, or a list of levels for OME-Zarr multiscales."""
    node = zarr.open(store=open_store(path_or_url, store=store), mode='r')
    name = path_or_url.rstrip('/').rsplit('/', 1)[-1]
    if isinstance(node, zarr.Array):
        return node, {'name': name}
    attrs: dict[str, Any] = dict(node.attrs)
    ome = attrs.get('ome', attrs)
    multiscales = ome.get('multiscales')
    if not multiscales:
        arrays = [a for _, a in node.arrays()]
        if not arrays:
            raise ValueError(f'{path_or_url} holds no zarr array')
        return arrays[0], {'name': name}
    datasets = multiscales[0]['datasets']
    levels = [node[d['path']] for d in datasets]
    kwargs: dict[str, Any] = {'name': multiscales[0].get('name') or name}
    for transform in datasets[0].get('coordinateTransformations', []):
        if transform.get('type') == 'scale':
            kwargs['scale'] = transform['scale']
    channels = (ome.get('omero') or {}).get('channels') or []
    window = channels[0].get('window') if channels else None
    if window and 'start' in window and 'end' in window:
        kwargs['contrast_limits'] = (window['start'], window['end'])
    return (levels if len(levels) > 1 else levels[0]), kwargs
