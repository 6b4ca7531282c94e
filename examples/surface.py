"""A time series of surfaces: each step's mesh is sliced off the main thread.

Run: python examples/surface.py   (toggle 2D/3D with the button at the bottom left)
"""

import numpy as np
import napari
from _headless import show

import napari_async_slicing

napari_async_slicing.enable()
n = 60
theta, phi = np.meshgrid(np.linspace(0, np.pi, n), np.linspace(0, 2 * np.pi, n), indexing='ij')
sphere = np.stack([np.cos(theta), np.sin(theta) * np.sin(phi), np.sin(theta) * np.cos(phi)], -1)
sphere = sphere.reshape(-1, 3)
faces = []
for i in range(n - 1):
    for j in range(n - 1):
        a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
        faces += [[a, b, c], [b, d, c]]
faces = np.array(faces)
times = 20
vertices = np.concatenate(
    [np.c_[np.full(len(sphere), t), 100 + (40 + 2 * t) * sphere] for t in range(times)]
)
all_faces = np.concatenate([faces + t * len(sphere) for t in range(times)])
values = vertices[:, 1]

viewer = napari.Viewer(ndisplay=3)
viewer.add_surface((vertices, all_faces, values), colormap='viridis', name='growing sphere')
show(viewer, steps=[2, 10, 19])
