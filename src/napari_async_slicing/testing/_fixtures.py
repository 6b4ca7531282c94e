"""Pytest fixtures for tests that read zarr over a real local HTTP server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zarr

from ._data import SAMPLE_SIZES, make_ome_zarr, make_volume
from ._open import open_remote_array
from ._server import ZarrHTTPServer

__all__ = [
    'remote_tiny_volume',
    'tiny_ome_zarr',
    'tiny_volume',
    'tiny_volume_server',
    'zarr_server_factory',
]

#: Default lifetime bound for servers made by ``zarr_server_factory``.
TEST_SERVER_MAX_SECONDS = 300.0


@pytest.fixture
def zarr_server_factory() -> Iterator[Callable[..., ZarrHTTPServer]]:
    """Factory ``(root, **kwargs) -> started ZarrHTTPServer``; all are stopped at teardown."""
    servers: list[ZarrHTTPServer] = []

    def factory(root: str | Path, **kwargs: Any) -> ZarrHTTPServer:
        kwargs.setdefault('max_seconds', TEST_SERVER_MAX_SECONDS)
        server = ZarrHTTPServer(root, **kwargs)
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture(scope='session')
def tiny_volume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path ``<tmp>/volume`` of a (12, 64, 64) uint16 zarr v3 array, chunks (1, 32, 32)."""
    return make_volume(tmp_path_factory.mktemp('tiny-volume') / 'volume', **SAMPLE_SIZES['volume']['tiny'])


@pytest.fixture
def tiny_volume_server(
    tiny_volume: Path, zarr_server_factory: Callable[..., ZarrHTTPServer]
) -> ZarrHTTPServer:
    """Server (no latency) rooted at the parent of ``tiny_volume``; the array is at ``url_for("volume")``."""
    return zarr_server_factory(tiny_volume.parent)


@pytest.fixture
def remote_tiny_volume(tiny_volume: Path, tiny_volume_server: ZarrHTTPServer) -> zarr.Array:
    """``tiny_volume`` opened over HTTP (fsspec store) from ``tiny_volume_server``."""
    return open_remote_array(tiny_volume_server.url_for(tiny_volume.name), zarr_format=3)


@pytest.fixture(scope='session')
def tiny_ome_zarr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a 4-level OME-Zarr 0.5 image (6, 128, 128), chunks (1, 64, 64), with labels."""
    return make_ome_zarr(
        tmp_path_factory.mktemp('tiny-ome') / 'image.ome.zarr', **SAMPLE_SIZES['ome']['tiny']
    )
