"""50 000 track points over 500 time points: the time step is sliced on a worker.

napari 0.9 recomputes the Tracks extent and thumbnail on the main thread at every step;
napari-async-slicing does it off the main thread. Run: python examples/tracks_many.py
"""

import numpy as np
import napari
from _headless import show

import napari_async_slicing

napari_async_slicing.enable()
n_tracks, n_times = 100, 500
rng = np.random.default_rng(0)
track_id = np.repeat(np.arange(n_tracks), n_times)
t = np.tile(np.arange(n_times), n_tracks)
start = np.repeat(rng.uniform(100, 900, (n_tracks, 2)), n_times, axis=0)
walk = np.cumsum(rng.normal(0, 2, (n_tracks, n_times, 2)), axis=1).reshape(-1, 2)
data = np.c_[track_id, t, start + walk]

viewer = napari.Viewer()
viewer.add_tracks(data, tail_length=40, name='tracks')
show(viewer, steps=[100, 250, 400])
