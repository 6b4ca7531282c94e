"""Open local or HTTP zarr / OME-Zarr (v3) for napari: metadata only, no chunk reads."""

from __future__ import annotations

from typing import Any

import zarr


def is_url(path: str) -> bool:
    return path.startswith(('http://', 'https://'))


def open_store(path_or_url: str, *, store: str = 'obstore') -> Any:
    """A read-only zarr store. Over HTTP, ``obstore`` (retries 5xx itself) or ``fsspec``."""
    if not is_url(path_or_url):
        return zarr.storage.LocalStore(path_or_url, read_only=True)
    if store == 'obstore':
        from datetime import timedelta

        from obstore.store import HTTPStore

        # obstore retries 5xx itself; bound it (its default of 10 retries turns one stalled
        # request into 10 x the timeout).
        http = HTTPStore.from_url(
            path_or_url,
            client_options={'allow_http': True, 'timeout': '20s'},
            retry_config={'max_retries': 3, 'retry_timeout': timedelta(seconds=30)},
        )
        return zarr.storage.ObjectStore(http, read_only=True)
    if store == 'fsspec':
        return zarr.storage.FsspecStore.from_url(path_or_url, read_only=True)
    raise ValueError(f"store must be 'obstore' or 'fsspec', not {store!r}")


def open_image(path_or_url: str, *, store: str = 'obstore') -> tuple[Any, dict[str, Any]]:
    """Return ``(data, add_image kwargs)``: an array, or a list of levels for OME-Zarr multiscales."""
    node = zarr.open(store=open_store(path_or_url, store=store), mode='r')
    name = path_or_url.rstrip('/').rsplit('/', 1)[-1]
    if isinstance(node, zarr.Array):
        return node, {'name': name}
    attrs = dict(node.attrs)
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
