"""Opening remote data never blocks: ``add_image`` / ``add_labels`` read no chunk on the main thread.

napari reads plane 0 while constructing a layer over lazy data (and, for multiscale data, reads
level 0 at plane 0 on the first canvas draw), then slices the plane dims asks for. With our slicer
the first read is the plane dims asks for, on a worker, and contrast limits fit that plane.
"""

from __future__ import annotations

import time

import dask.array as da
import numpy as np
import pytest

from napari_async_slicing._io import open_image
from napari_async_slicing.testing import ZarrHTTPServer, make_ome_zarr, which_plane

from .conftest import SHAPE

#: Every chunk request waits this long: a chunk read on the main thread would block add_image
#: at least this long.
SLOW = 2.5
CENTRE = (SHAPE[0] - 1) // 2


def planes_requested(server) -> set[int]:
    """Plane (z) indices of the chunk requests the server has seen (zarr v3 keys c/z/y/x)."""
    planes = set()
    for entry in server.log:
        parts = entry['path'].split('/')
        if 'c' in parts:
            planes.add(int(parts[parts.index('c') + 1]))
    return planes


def record_planes(layer) -> list:
    """Planes handed to the layer, as they are applied."""
    shown: list = []

    def on_set_data(event=None) -> None:
        raw = layer._slice.image.raw
        raw = raw[-1] if isinstance(raw, list) else raw
        shown.append(which_plane(np.asarray(raw), level=layer.data_level) if layer._slice.image.raw.ndim else None)

    layer.events.set_data.connect(on_set_data)
    return shown


@pytest.mark.parametrize('kind', ['zarr', 'dask'])
def test_add_image_reads_no_chunk_on_the_main_thread(viewer, server, remote_volume, qtbot, kind):
    data = remote_volume if kind == 'zarr' else da.from_zarr(remote_volume)
    server.configure(latency=SLOW)
    server.reset_counters()
    start = time.perf_counter()
    layer = viewer.add_image(data)
    took = time.perf_counter() - start
    assert took < SLOW, f'add_image blocked {took:.2f} s: it waited for a chunk'
    assert not layer.loaded
    shown = record_planes(layer)
    qtbot.waitUntil(lambda: layer.loaded and bool(shown), timeout=int(3 * SLOW * 1000))
    assert viewer.dims.current_step[0] == CENTRE
    assert shown == [CENTRE]  # never plane 0 first
    assert planes_requested(server) == {CENTRE}
    plane = np.asarray(layer._slice.image.raw)
    assert tuple(layer.contrast_limits) == (plane.min(), plane.max())


def test_add_labels_reads_no_chunk_on_the_main_thread(viewer, server, remote_volume, qtbot):
    # The first Labels layer of a process imports napari's labels controls (pandas, vispy line
    # atlases: seconds on a slow machine); do that before timing.
    viewer.layers.remove(viewer.add_labels(np.zeros((2, 4, 4), np.uint16)))
    server.configure(latency=SLOW)
    server.reset_counters()
    start = time.perf_counter()
    layer = viewer.add_labels(remote_volume)
    assert time.perf_counter() - start < SLOW
    qtbot.waitUntil(lambda: layer.loaded and layer._slice.image.raw.size > 0, timeout=int(3 * SLOW * 1000))
    assert which_plane(np.asarray(layer._slice.image.raw)) == CENTRE
    assert planes_requested(server) == {CENTRE}


@pytest.fixture(scope='module')
def ome_path(tmp_path_factory):
    return make_ome_zarr(
        tmp_path_factory.mktemp('ome') / 'image.zarr',
        shape=(SHAPE[0], 1024, 1024),
        chunks=(1, 256, 256),
        levels=3,
        labels=False,
    )


@pytest.fixture
def ome_server(ome_path):
    with ZarrHTTPServer(ome_path.parent, max_seconds=300) as srv:
        yield srv


def test_add_multiscale_reads_no_chunk_on_the_main_thread(viewer_with, ome_path, ome_server, qtbot):
    viewer = viewer_with(prefetch_radius=0)  # only what opening reads: no neighbours, no coarse window
    server = ome_server
    levels, kwargs = open_image(server.url_for(ome_path.name), store='fsspec')
    assert len(levels) == 3
    window = kwargs.pop('contrast_limits')  # OME-Zarr omero window
    server.configure(latency=SLOW)
    server.reset_counters()
    start = time.perf_counter()
    layer = viewer.add_image(levels, **kwargs)
    assert time.perf_counter() - start < SLOW
    qtbot.waitUntil(lambda: layer.loaded and layer._slice.image.raw.size > 0, timeout=int(4 * SLOW * 1000))
    assert planes_requested(server) == {CENTRE}  # napari would also read plane 0 at level 0
    plane = np.asarray(layer._slice.image.raw)
    assert which_plane(plane, level=layer.data_level) == CENTRE
    assert tuple(layer.contrast_limits) == (plane.min(), plane.max())
    # With the OME window given, it is used as is.
    other = viewer.add_image(levels, contrast_limits=window, name='windowed')
    assert tuple(other.contrast_limits) == tuple(window)


def test_open_failure_notifies_instead_of_raising(viewer, server, remote_volume, qtbot, errors):
    server.configure(failure_rate=1.0, failure_mode='500')
    layer = viewer.add_image(remote_volume, name='broken')  # must not raise
    qtbot.waitUntil(lambda: layer.loaded and bool(errors), timeout=15000)
    assert "layer 'broken'" in str(errors[0])
    server.configure(failure_rate=0.0)
    viewer.dims.current_step = (CENTRE + 1, *viewer.dims.current_step[1:])
    qtbot.waitUntil(lambda: layer.loaded and layer._slice.image.raw.size > 0, timeout=5000)
    assert which_plane(np.asarray(layer._slice.image.raw)) == CENTRE + 1
