"""Testing helpers: a local HTTP server for zarr data with latency and failure
injection, deterministic sample volumes, and openers for remote zarr stores.

Fixtures live in :mod:`napari_async_slicing.testing.pytest_plugin`.
"""

from ._cli import serve_main
from ._data import expected_plane, make_ome_zarr, make_volume, plane_value, sample_data, which_plane
from ._open import open_remote_array, open_remote_group, open_remote_store
from ._server import ZarrHTTPServer, server_in_process

__all__ = [
    'ZarrHTTPServer',
    'expected_plane',
    'make_ome_zarr',
    'make_volume',
    'open_remote_array',
    'open_remote_group',
    'open_remote_store',
    'plane_value',
    'sample_data',
    'serve_main',
    'server_in_process',
    'which_plane',
]
