"""OME-Zarr labels over HTTP (127.0.0.1, 100 ms per request): reads are cancellable, the UI never waits.

Run: python examples/labels_remote.py
"""

import os

import napari
from _headless import show

import napari_async_slicing
from napari_async_slicing.testing import ZarrHTTPServer, open_remote_array, sample_data

path = sample_data('ome', os.environ.get('EXAMPLE_SAMPLE_SIZE', 'small'))
with ZarrHTTPServer(path.parent, latency=0.1, max_seconds=3600) as server:
    napari_async_slicing.enable()
    labels = open_remote_array(server.url_for(f'{path.name}/labels/cells/0'))
    viewer = napari.Viewer()
    viewer.add_labels(labels, name='cells (remote)')
    show(viewer, steps=[1, 3, 4])  # cells come and go with z (on the tiny sample the one cell is on 4)
