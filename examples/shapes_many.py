"""Many polygons over many planes: which shapes are in view is computed on a worker.

napari 0.9 slices Shapes on the main thread (hundreds of ms per step for 20 000 polygons);
with napari-async-slicing the slider stays responsive. Run: python examples/shapes_many.py
"""

import numpy as np
import napari
from _headless import show

import napari_async_slicing

napari_async_slicing.enable()
N = int(__import__('os').environ.get('EXAMPLE_SHAPES', 5000))
nz = 100
rng = np.random.default_rng(0)
angles = np.linspace(0, 2 * np.pi, 6, endpoint=False)
polygons = []
for i in range(N):
    c = rng.uniform(20, 980, 2)
    polygons.append(np.c_[np.full(6, i % nz), c[0] + 12 * np.cos(angles), c[1] + 12 * np.sin(angles)])

viewer = napari.Viewer()
viewer.add_shapes(polygons, shape_type='polygon', face_color='coral', edge_width=1, name='polygons')
show(viewer, steps=[10, 50, 99])
