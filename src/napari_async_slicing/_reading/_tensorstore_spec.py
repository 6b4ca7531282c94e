"""Which tensorstore spec reads a zarr array: pure mapping, nothing is opened or read.

:func:`spec_for` maps a ``zarr.Array`` (or the one under ``dask.array.from_zarr(z)``) to a
tensorstore spec: a ``LocalStore`` to the ``file`` kvstore, an ``FsspecStore`` over HTTP(S) to the
``http`` kvstore (``base_url`` and headers), zarr's ``ObjectStore`` over obstore's ``HTTPStore`` /
``S3Store`` / ``GCSStore`` / ``LocalStore`` to ``http`` / ``s3`` / ``gcs`` / ``file``; the array's
path is appended and its zarr format picks the driver (v2: ``zarr``, v3: ``zarr3``). What it
cannot map exactly (other stores, credentials or client options tensorstore cannot be given) maps
to None: the array is read with zarr-python, as without tensorstore.

Needs zarr (and obstore for its stores), never tensorstore itself.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def _join(*parts: str) -> str:
    """Join kvstore path parts with single slashes, ending with one (a directory)."""
    inner = '/'.join(p.strip('/') for p in parts if p and p.strip('/'))
    lead = '/' if parts and parts[0].startswith('/') else ''
    return f'{lead}{inner}/' if inner else lead


def _header_lines(headers: Any) -> list[str] | None:
    """``{'Name': 'value'}`` as tensorstore's ``["Name: value"]``; None if not plain strings."""
    lines = []
    for name, value in dict(headers or {}).items():
        if isinstance(value, bytes):
            value = value.decode('latin-1')
        if not isinstance(name, str) or not isinstance(value, str) or '\n' in value or '\r' in value:
            return None
        lines.append(f'{name}: {value}')
    return lines


def _is_http_url(url: Any) -> bool:
    return isinstance(url, str) and url.startswith(('http://', 'https://')) and '#' not in url


def _http_kvstore(url: str, headers: list[str]) -> dict[str, Any]:
    kv: dict[str, Any] = {'driver': 'http', 'base_url': url.rstrip('/')}
    if headers:
        kv['headers'] = headers
    return kv


#: aiohttp request/session options of an ``HTTPFileSystem`` that do not change what is read.
_FSSPEC_IGNORED = frozenset({'timeout', 'trust_env', 'raise_for_status', 'auto_decompress'})


def _fsspec_kvstore(store: Any) -> dict[str, Any] | None:
    fs = store.fs
    protocols = set(fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,))
    path = str(store.path)
    if {'http', 'https'} & protocols:
        if not _is_http_url(path):
            return None
        request = dict(getattr(fs, 'kwargs', None) or {})
        session = dict(getattr(fs, 'client_kwargs', None) or {})
        headers = {**dict(session.pop('headers', None) or {}), **dict(request.pop('headers', None) or {})}
        for options in (request, session):
            auth = options.pop('auth', None)
            if auth is not None:
                encode = getattr(auth, 'encode', None)  # aiohttp.BasicAuth
                if encode is None:
                    return None
                headers['Authorization'] = encode()
            if set(options) - _FSSPEC_IGNORED:
                return None  # cookies, proxies, ssl contexts...: not ours to drop
        lines = _header_lines(headers)
        return None if lines is None else _http_kvstore(path, lines)
    if {'file', 'local'} & protocols:
        return {'driver': 'file', 'path': _join(path)}
    return None


#: obstore client options that do not change what is read (or that tensorstore sets itself).
_OBSTORE_CLIENT_IGNORED = frozenset(
    {
        'allow_http',
        'timeout',
        'connect_timeout',
        'pool_idle_timeout',
        'pool_max_idle_per_host',
        'http1_only',
        'http2_only',
        'http2_keep_alive_interval',
        'http2_keep_alive_timeout',
        'http2_keep_alive_while_idle',
        'http2_max_frame_size',
    }
)


def _obstore_headers(client_options: Any) -> list[str] | None:
    options = dict(client_options or {})
    headers = dict(options.pop('default_headers', None) or {})
    agent = options.pop('user_agent', None)
    if agent is not None:
        headers['User-Agent'] = agent
    if set(options) - _OBSTORE_CLIENT_IGNORED:
        return None
    return _header_lines(headers)


def _config(store: Any) -> dict[str, Any]:
    """obstore's config with the ``aws_`` / ``google_`` prefixes taken off the keys."""
    out = {}
    for key, value in dict(getattr(store, 'config', None) or {}).items():
        key = str(key).lower()
        for prefix in ('aws_', 'google_'):
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def _truthy(value: Any) -> bool:
    return str(value).lower() in {'true', '1', 'yes'}


def _s3_kvstore(prefix: str, config: dict[str, Any]) -> dict[str, Any] | None:
    kv: dict[str, Any] = {'driver': 's3', 'bucket': config.pop('bucket', None), 'path': _join(prefix)}
    if 'region' in config:
        kv['aws_region'] = config.pop('region')
    if 'endpoint' in config:
        kv['endpoint'] = config.pop('endpoint')
    if _truthy(config.pop('skip_signature', 'false')):
        kv['aws_credentials'] = {'type': 'anonymous'}
    if _truthy(config.pop('request_payer', 'false')):
        kv['requester_pays'] = True
    config.pop('virtual_hosted_style_request', None)  # how the bucket is addressed, not what
    # Keys, tokens, other endpoints' settings: tensorstore takes credentials only from its own
    # providers (environment, profile, metadata), so an explicit one cannot be mapped.
    return kv if kv['bucket'] and not config else None


def _obstore_kvstore(store: Any) -> dict[str, Any] | None:
    try:
        from obstore import store as obstores
    except ImportError:  # pragma: no cover - zarr's ObjectStore needs obstore
        return None
    inner = store.store
    if getattr(inner, 'credential_provider', None) is not None:
        return None  # a Python callable: tensorstore cannot call it
    if isinstance(inner, obstores.HTTPStore):
        headers = _obstore_headers(inner.client_options)
        if headers is None or not _is_http_url(inner.url):
            return None
        return _http_kvstore(inner.url, headers)
    if isinstance(inner, obstores.LocalStore):
        prefix = getattr(inner, 'prefix', None)
        return None if prefix is None else {'driver': 'file', 'path': _join(str(prefix))}
    prefix = str(getattr(inner, 'prefix', None) or '')
    if _obstore_headers(inner.client_options) != []:
        return None
    config = _config(inner)
    if isinstance(inner, obstores.S3Store):
        return _s3_kvstore(prefix, config)
    if isinstance(inner, obstores.GCSStore):
        kv = {'driver': 'gcs', 'bucket': config.pop('bucket', None), 'path': _join(prefix)}
        # Without credentials tensorstore reads anonymously, as obstore's skip_signature does.
        config.pop('skip_signature', None)
        return kv if kv['bucket'] and not config else None
    return None


def _kvstore_for(store: Any) -> dict[str, Any] | None:
    import zarr.storage

    if isinstance(store, zarr.storage.LocalStore):
        return {'driver': 'file', 'path': _join(str(store.root))}
    if isinstance(store, zarr.storage.FsspecStore):
        return _fsspec_kvstore(store)
    object_store = getattr(zarr.storage, 'ObjectStore', None)
    if object_store is not None and isinstance(store, object_store):
        return _obstore_kvstore(store)
    return None  # memory, zip, wrapper stores (logging, latency, caching), anything else


def zarr_array_of(array: Any) -> Any:
    """``array`` if it is a zarr array, the zarr array under ``da.from_zarr`` of one, or None."""
    from napari_async_slicing._reading._sources import is_zarr_array, zarr_under_dask

    return array if is_zarr_array(array) else zarr_under_dask(array)


def spec_for(array: Any) -> dict[str, Any] | None:
    """The tensorstore spec that reads ``array`` (a ``zarr.Array`` or ``da.from_zarr`` of one),
    or None where it cannot be mapped exactly."""
    array = zarr_array_of(array)
    if array is None:
        return None
    try:
        zarr_format = array.metadata.zarr_format
        kvstore = _kvstore_for(array.store)
    except Exception:  # an unusual store: zarr-python reads it
        logger.debug('no tensorstore spec for %r', array, exc_info=True)
        return None
    if kvstore is None or zarr_format not in (2, 3):
        return None
    kvstore = dict(kvstore)
    path = str(array.path or '')
    if kvstore['driver'] == 'http':
        # ``path`` is appended to ``base_url`` (whose own path is a directory); tensorstore
        # percent-encodes it.
        kvstore['path'] = _join(path)
    else:
        kvstore['path'] = _join(kvstore.get('path', ''), path)
    return {'driver': 'zarr3' if zarr_format == 3 else 'zarr', 'kvstore': kvstore}
