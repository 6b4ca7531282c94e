"""A 3D vector field: the vectors on the current plane are sliced off the main thread.

Run: python examples/vectors.py
"""

import numpy as np
import napari
from _headless import show

import napari_async_slicing

napari_async_slicing.enable()
nz, ny, nx = 30, 40, 40
z, y, x = np.meshgrid(np.arange(nz), np.arange(ny) * 10, np.arange(nx) * 10, indexing='ij')
positions = np.stack([z, y, x], axis=-1).reshape(-1, 3).astype(float)
angle = positions[:, 0] / nz * 2 * np.pi
directions = np.stack([np.zeros_like(angle), 4 * np.sin(angle), 4 * np.cos(angle)], axis=-1)

viewer = napari.Viewer()
viewer.add_vectors(np.stack([positions, directions], axis=1), edge_width=1, name='vector field')
show(viewer, steps=[3, 15, 25])
