"""Points over a lazily computed (dask) image: both slice off the main thread.

Run: python examples/points_dask.py   (scrub z: the points on each plane follow the image)
"""

import dask.array as da
import numpy as np
import napari
from _headless import show

import napari_async_slicing

napari_async_slicing.enable()
nz, ny, nx = 60, 256, 256
z = da.arange(nz, chunks=1)[:, None, None]
image = (z * 4 + da.random.random((nz, ny, nx), chunks=(1, ny, nx)) * 40).astype(np.float32)
rng = np.random.default_rng(0)
points = np.c_[rng.integers(0, nz, 20000), rng.uniform(0, ny, 20000), rng.uniform(0, nx, 20000)]

viewer = napari.Viewer()
viewer.add_image(image, contrast_limits=(0, 280), name='dask image')
viewer.add_points(points, size=4, face_color='yellow', name='points')
show(viewer, steps=[5, 30, 45])
