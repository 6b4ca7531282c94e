"""The chunk cache (R13) with a real viewer reading zarr over real HTTP (127.0.0.1)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import napari_async_slicing
from napari_async_slicing.testing import which_plane

from .conftest import CHUNKS, SHAPE, vispy_data

CLIM = (0, 64 * SHAPE[0] + 64)
CHUNK_BYTES = int(np.prod(CHUNKS)) * 2  # uint16
CHUNKS_PER_PLANE = (SHAPE[1] // CHUNKS[1]) * (SHAPE[2] // CHUNKS[2])


def shown_plane(viewer, layer) -> int | None:
    return which_plane(vispy_data(viewer, layer).astype(np.uint16))


def step_to(viewer, z: int) -> None:
    viewer.dims.current_step = (z, *viewer.dims.current_step[1:])


def show(viewer, layer, z: int, qtbot) -> None:
    step_to(viewer, z)
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == z and layer.loaded, timeout=5000)


def add_remote(viewer, data, **kwargs):
    with viewer.sync_slicing():
        return viewer.add_image(data, contrast_limits=CLIM, **kwargs)


def test_revisit_is_served_from_the_cache_without_requests(viewer_with, server, remote_volume, qtbot):
    viewer = viewer_with(prefetch_radius=0)
    layer = add_remote(viewer, remote_volume, name='remote')
    server.configure(latency=0.05)
    show(viewer, layer, 3, qtbot)
    show(viewer, layer, 8, qtbot)
    server.wait_idle()
    server.reset_counters()
    step_to(viewer, 3)
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 3 and layer.loaded, timeout=2000)
    viewer._layer_slicer.wait_until_idle(timeout=5)
    assert server.chunk_requests == 0
    (row,) = viewer._layer_slicer.stats()
    assert row['cache_hits'] >= CHUNKS_PER_PLANE
    assert row['cache_misses'] >= 2 * CHUNKS_PER_PLANE  # planes 3 and 8 the first time
    totals = viewer._layer_slicer.cache_stats()
    assert totals['chunks'] >= 2 * CHUNKS_PER_PLANE and totals['bytes'] <= totals['max_bytes']

    from napari_async_slicing._qt._latency_widget import LatencyWidget

    widget = LatencyWidget(viewer)
    qtbot.addWidget(widget)
    assert 'chunk cache:' in widget.label.text() and 'hits' in widget.label.text()


def test_dask_over_remote_zarr_is_cached_per_block(viewer_with, server, remote_volume, qtbot):
    import dask.array as da

    viewer = viewer_with(prefetch_radius=0)
    layer = add_remote(viewer, da.from_zarr(remote_volume))
    show(viewer, layer, 2, qtbot)
    show(viewer, layer, 9, qtbot)
    server.wait_idle()
    server.reset_counters()
    show(viewer, layer, 2, qtbot)
    assert server.chunk_requests == 0
    assert viewer._layer_slicer.stats()[0]['cache_hits'] >= CHUNKS_PER_PLANE


def test_replacing_layer_data_never_shows_cached_chunks_of_the_old_data(
    viewer_with, server, remote_volume, qtbot, tmp_path
):
    viewer = viewer_with(prefetch_radius=0)
    layer = add_remote(viewer, remote_volume)
    show(viewer, layer, 4, qtbot)
    show(viewer, layer, 6, qtbot)
    # Same shape, chunks and dtype, other values: only the source identity tells them apart.
    other = zarr.create_array(tmp_path / 'other.zarr', shape=SHAPE, chunks=CHUNKS, dtype='uint16')
    other[:] = 7
    layer.data = other
    viewer._layer_slicer.wait_until_idle(timeout=5)
    assert np.all(vispy_data(viewer, layer) == 7)
    step_to(viewer, 4)
    viewer._layer_slicer.wait_until_idle(timeout=5)
    assert np.all(vispy_data(viewer, layer) == 7)
    # A freshly opened array of the very same store is new data to the cache, too.
    server.reset_counters()
    from napari_async_slicing.testing import open_remote_array

    layer.data = open_remote_array(server.url_for('volume.zarr'))
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 4 and layer.loaded, timeout=5000)
    assert server.chunk_requests >= CHUNKS_PER_PLANE


def test_data_written_in_place_shows_after_refresh(viewer_with, qtbot, tmp_path):
    """``layer.refresh()`` is how napari users say the data changed: cached chunks go."""
    viewer = viewer_with(prefetch_radius=0)
    data = zarr.create_array(tmp_path / 'data.zarr', shape=SHAPE, chunks=CHUNKS, dtype='uint16')
    data[:] = np.broadcast_to(np.arange(SHAPE[0], dtype='uint16')[:, None, None], SHAPE)
    with viewer.sync_slicing():
        layer = viewer.add_image(data, contrast_limits=(0, 100))
    for z in (2, 5, 2):
        step_to(viewer, z)
        qtbot.waitUntil(lambda z=z: layer.loaded and np.all(vispy_data(viewer, layer) == z), timeout=5000)
    assert viewer._layer_slicer.stats()[0]['cache_hits'] >= CHUNKS_PER_PLANE
    data[2] = 99
    layer.refresh()
    qtbot.waitUntil(lambda: layer.loaded and np.all(vispy_data(viewer, layer) == 99), timeout=5000)
    step_to(viewer, 5)
    qtbot.waitUntil(lambda: layer.loaded and np.all(vispy_data(viewer, layer) == 5), timeout=5000)
    step_to(viewer, 2)
    qtbot.waitUntil(lambda: layer.loaded, timeout=5000)
    assert np.all(vispy_data(viewer, layer) == 99)


def test_painting_into_zarr_labels_drops_their_cached_chunks(viewer_with, qtbot, tmp_path):
    viewer = viewer_with(prefetch_radius=0)
    data = zarr.create_array(tmp_path / 'labels.zarr', shape=SHAPE, chunks=CHUNKS, dtype='uint8')
    data[:] = 1
    with viewer.sync_slicing():
        layer = viewer.add_labels(data)
    for z in (3, 6):
        step_to(viewer, z)
        qtbot.waitUntil(lambda: layer.loaded, timeout=5000)
    step_to(viewer, 3)
    qtbot.waitUntil(lambda: layer.loaded, timeout=5000)
    layer.data_setitem((np.array([3]), np.array([10]), np.array([10])), 5)
    assert data[3, 10, 10] == 5
    step_to(viewer, 6)
    qtbot.waitUntil(lambda: layer.loaded, timeout=5000)
    step_to(viewer, 3)
    qtbot.waitUntil(lambda: layer.loaded, timeout=5000)
    assert layer._slice.image.raw[10, 10] == 5  # not the cached chunk from before the paint


def test_cache_stays_within_its_budget_while_scrubbing(viewer_with, server, remote_volume, qtbot):
    budget = 10 * CHUNK_BYTES  # two and a half planes
    viewer = viewer_with(cache_bytes=budget, prefetch_radius=0)
    slicer = viewer._layer_slicer
    layer = add_remote(viewer, remote_volume)
    server.configure(latency=0.01)
    used: list[int] = []
    for z in list(range(SHAPE[0])) + list(range(SHAPE[0] - 1, -1, -1)):
        step_to(viewer, z)
        used.append(slicer.cache.bytes)
        qtbot.wait(5)
        used.append(slicer.cache.bytes)
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 0 and layer.loaded, timeout=5000)
    assert max(used) <= budget + slicer.options.workers * CHUNK_BYTES
    assert slicer.cache.bytes <= budget
    assert slicer.cache_stats()['evictions'] > 0


def test_cache_bytes_zero_turns_the_cache_off(viewer_with, server, remote_volume, qtbot):
    viewer = viewer_with(cache_bytes=0)
    layer = add_remote(viewer, remote_volume)
    show(viewer, layer, 3, qtbot)
    show(viewer, layer, 8, qtbot)
    server.wait_idle()
    server.reset_counters()
    show(viewer, layer, 3, qtbot)
    server.wait_idle()
    assert server.chunk_requests == CHUNKS_PER_PLANE
    assert viewer._layer_slicer.cache_stats()['chunks'] == 0
    assert viewer._layer_slicer.cache_stats()['prefetch']['started'] == 0


def test_cache_bytes_option_is_bounded(monkeypatch):
    from napari_async_slicing import SlicingOptions

    monkeypatch.setenv('NAPARI_ASYNC_SLICING_CACHE_BYTES', '1234')
    assert SlicingOptions.from_env().cache_bytes == 1234
    with pytest.raises(ValueError, match='cache_bytes'):
        SlicingOptions(cache_bytes=2**31)


#: Planes computed by ``_record_on_cluster`` (module level: distributed pickles tasks by reference).
_ON_CLUSTER: list[int] = []


def _record_on_cluster(block, block_info=None):
    import distributed

    distributed.get_worker()  # raises ValueError outside a worker
    _ON_CLUSTER.append(block_info[0]['chunk-location'][0])
    return block


def test_dask_layers_read_on_a_distributed_cluster(make_napari_viewer, server, remote_volume, qtbot):
    """R21: with ``enable(dask_client=client)`` dask chunks are computed on the cluster, cached here."""
    distributed = pytest.importorskip('distributed')
    import dask.array as da

    on_cluster = _ON_CLUSTER
    on_cluster.clear()
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
        napari_async_slicing.enabled(dask_client=client, prefetch_radius=0),
    ):
        viewer = make_napari_viewer(show=True)
        layer = add_remote(viewer, da.from_zarr(remote_volume).map_blocks(_record_on_cluster, dtype='uint16'))
        for z in (3, 8):
            show(viewer, layer, z, qtbot)
        assert {3, 8} <= set(on_cluster)
        on_cluster.clear()
        server.wait_idle()
        server.reset_counters()
        step_to(viewer, 3)
        viewer._layer_slicer.wait_until_idle(timeout=5)
        assert shown_plane(viewer, layer) == 3
        assert on_cluster == [] and server.chunk_requests == 0  # the revisit never left this process
        viewer.close()
