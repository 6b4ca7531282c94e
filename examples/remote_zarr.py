"""Scrub a zarr volume served over HTTP (127.0.0.1, 100 ms per request) with our slicer.

Run: python examples/remote_zarr.py   (drag the slider: the UI never freezes)
"""

import napari

import napari_async_slicing
from napari_async_slicing._io import open_image
from napari_async_slicing.testing import ZarrHTTPServer, sample_data

path = sample_data('volume', 'small')
with ZarrHTTPServer(path.parent, latency=0.1, max_seconds=3600) as server:
    napari_async_slicing.enable()
    data, kwargs = open_image(server.url_for(path.name))
    viewer = napari.Viewer()
    viewer.add_image(data, contrast_limits=(0, 64 * data.shape[0] + 64), **kwargs)
    napari.run()
