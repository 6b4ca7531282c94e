"""A remote zarr volume rendered in 3D: the volume is read on the heavy worker slots.

Run: python examples/image_3d_remote.py   (the 2D/3D button switches modes; the UI stays live)
"""

import os

import napari
from _headless import show

import napari_async_slicing
from napari_async_slicing.testing import ZarrHTTPServer, open_remote_array, sample_data

path = sample_data('volume', os.environ.get('EXAMPLE_SAMPLE_SIZE', 'small'))
with ZarrHTTPServer(path.parent, latency=0.05, max_seconds=3600) as server:
    napari_async_slicing.enable()
    volume = open_remote_array(server.url_for(path.name))
    viewer = napari.Viewer(ndisplay=3)
    viewer.add_image(volume, contrast_limits=(0, 64 * volume.shape[0] + 64), name='volume (remote)')
    show(viewer, steps=[])
