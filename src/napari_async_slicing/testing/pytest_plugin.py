"""Pytest plugin registering the fixtures of :mod:`napari_async_slicing.testing`."""

from ._fixtures import (
    remote_tiny_volume,
    tiny_ome_zarr,
    tiny_volume,
    tiny_volume_server,
    zarr_server_factory,
)

__all__ = [
    "remote_tiny_volume",
    "tiny_ome_zarr",
    "tiny_volume",
    "tiny_volume_server",
    "zarr_server_factory",
]
