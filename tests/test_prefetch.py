"""Prefetch of neighbour planes (R14) with a real viewer reading zarr over real HTTP."""

from __future__ import annotations

import time

import numpy as np

from .conftest import SHAPE, vispy_data
from .test_cache import CHUNKS_PER_PLANE, add_remote, show, shown_plane, step_to


def plane_requests(server, z: int) -> int:
    return server.count(f'volume.zarr/c/{z}/')


def test_prefetch_fetches_neighbours_in_the_scrub_direction(viewer_with, server, remote_volume, qtbot):
    viewer = viewer_with(prefetch_radius=2)
    slicer = viewer._layer_slicer
    layer = add_remote(viewer, remote_volume)
    server.configure(latency=0.03)
    step_to(viewer, 9)
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 9 and layer.loaded, timeout=5000)
    qtbot.waitUntil(lambda: slicer.prefetches_in_flight() == 0, timeout=5000)  # 10, 11, 8, 7
    server.wait_idle()
    server.reset_counters()
    step_to(viewer, 2)  # moving backwards, then resting on plane 2
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 2 and layer.loaded, timeout=5000)
    # Planes 1 and 0 (ahead) and 3 and 4 (behind) are fetched before the user gets there.
    qtbot.waitUntil(
        lambda: all(plane_requests(server, z) >= CHUNKS_PER_PLANE for z in (1, 0, 3, 4)), timeout=5000
    )
    log = server.log
    first = [min(e['start'] for e in log if e['path'].startswith(f'volume.zarr/c/{z}/')) for z in (1, 0, 3, 4)]
    assert first == sorted(first), 'the direction of motion comes first, nearest first'
    assert shown_plane(viewer, layer) == 2  # prefetched planes are never shown
    qtbot.waitUntil(lambda: slicer.prefetches_in_flight() == 0, timeout=5000)
    server.wait_idle()
    server.reset_counters()
    for z in (1, 0):  # from the cache
        step_to(viewer, z)
        qtbot.waitUntil(lambda z=z: shown_plane(viewer, layer) == z and layer.loaded, timeout=2000)
    server.wait_idle()
    assert plane_requests(server, 1) == plane_requests(server, 0) == 0
    assert slicer.cache_stats()['prefetch']['done'] >= 4


def test_a_visible_request_cancels_prefetch_and_is_not_delayed(viewer_with, server, remote_volume, qtbot):
    viewer = viewer_with(prefetch_radius=2)
    slicer = viewer._layer_slicer
    layer = add_remote(viewer, remote_volume)
    step_to(viewer, 2)  # no motion yet: prefetches 3, 4, 1, 0
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 2 and layer.loaded, timeout=5000)
    qtbot.waitUntil(lambda: slicer.prefetch_counts['done'] >= 4, timeout=5000)
    server.configure(latency=3.0)
    step_to(viewer, 3)  # cached: shown at once; then plane 5 is prefetched, slowly
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 3, timeout=2000)
    qtbot.waitUntil(lambda: server.in_flight > 0, timeout=3000)
    server.configure(latency=0.02)
    started = time.perf_counter()
    step_to(viewer, 9)
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 9 and layer.loaded, timeout=5000)
    assert time.perf_counter() - started < 2.0, 'the visible read waited for the prefetch'
    qtbot.waitUntil(lambda: slicer.prefetch_counts['cancelled'] >= 1, timeout=3000)
    source = slicer.cache.source_key(remote_volume)
    assert (source, (5, 0, 0)) not in slicer.cache  # plane 5's prefetch was stopped mid-read


def test_a_visible_request_joins_the_prefetch_of_its_own_plane(viewer_with, server, remote_volume, qtbot):
    viewer = viewer_with(prefetch_radius=1)
    slicer = viewer._layer_slicer
    layer = add_remote(viewer, remote_volume)
    step_to(viewer, 2)
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 2 and layer.loaded, timeout=5000)
    qtbot.waitUntil(lambda: slicer.prefetches_in_flight() == 0, timeout=5000)  # 3 and 1
    server.configure(latency=1.0)
    server.reset_counters()
    step_to(viewer, 3)  # cached: shown at once; then plane 4 is prefetched, slowly
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 3, timeout=2000)
    qtbot.waitUntil(lambda: server.in_flight == CHUNKS_PER_PLANE, timeout=3000)
    assert plane_requests(server, 4) == 0  # on the wire, not answered yet
    step_to(viewer, 4)
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 4 and layer.loaded, timeout=5000)
    # The visible request waited for the prefetch's chunk reads instead of starting over.
    server.wait_idle()
    assert plane_requests(server, 4) == CHUNKS_PER_PLANE


def test_no_prefetch_for_in_memory_data(viewer_with, qtbot):
    viewer = viewer_with(prefetch_radius=2)
    data = np.stack([np.full((32, 32), z, np.float32) for z in range(SHAPE[0])])
    layer = viewer.add_image(data)
    for z in (2, 3, 4):
        step_to(viewer, z)
        qtbot.waitUntil(lambda z=z: layer.loaded and np.all(vispy_data(viewer, layer) == z), timeout=5000)
    assert viewer._layer_slicer.prefetch_counts['started'] == 0


def test_prefetch_radius_zero_turns_prefetch_off(viewer_with, server, remote_volume, qtbot):
    viewer = viewer_with(prefetch_radius=0)
    layer = add_remote(viewer, remote_volume)
    server.reset_counters()
    step_to(viewer, 2)
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 2 and layer.loaded, timeout=5000)
    qtbot.wait(200)
    server.wait_idle()
    assert server.chunk_requests == CHUNKS_PER_PLANE
    assert viewer._layer_slicer.prefetch_counts['started'] == 0


def first_request(server, z: int) -> float | None:
    starts = [e['start'] for e in server.log if e['path'].startswith(f'volume.zarr/c/{z}/')]
    return min(starts) if starts else None


def test_a_steady_scrub_reads_its_next_plane_a_step_early(viewer_with, server, remote_volume, qtbot):
    viewer = viewer_with(prefetch_radius=1)
    slicer = viewer._layer_slicer
    layer = add_remote(viewer, remote_volume)
    show(viewer, layer, 1, qtbot)
    qtbot.waitUntil(lambda: slicer.prefetches_in_flight() == 0, timeout=5000)  # 2 and 0, at rest
    server.wait_idle()
    server.configure(latency=0.5)
    server.reset_counters()
    step_to(viewer, 3)  # one move of +2: not yet steady, nothing read ahead
    step_to(viewer, 5)  # +2 again: a steady scrub, so plane 7 is read now
    qtbot.waitUntil(lambda: plane_requests(server, 7) + server.in_flight >= 2 * CHUNKS_PER_PLANE,
                    timeout=3000)
    assert first_request(server, 6) is None and first_request(server, 4) is None
    qtbot.waitUntil(lambda: server.in_flight == 0 or plane_requests(server, 5) > 0, timeout=3000)
    asked = time.perf_counter()
    step_to(viewer, 7)
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 7 and layer.loaded, timeout=5000)
    server.wait_idle()
    # Plane 7's reads went out a step before it was asked for, and the visible request joined
    # them: each of its chunks was requested once.
    assert first_request(server, 7) < asked
    assert plane_requests(server, 7) == CHUNKS_PER_PLANE


def test_no_read_ahead_when_the_step_jumps_around(viewer_with, server, remote_volume, qtbot):
    viewer = viewer_with(prefetch_radius=1)
    slicer = viewer._layer_slicer
    layer = add_remote(viewer, remote_volume)
    show(viewer, layer, 1, qtbot)
    qtbot.waitUntil(lambda: slicer.prefetches_in_flight() == 0, timeout=5000)
    server.wait_idle()
    server.configure(latency=0.3)
    server.reset_counters()
    for z in (3, 6, 8):  # +2, +3, +2: no stride twice in a row
        step_to(viewer, z)
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 8 and layer.loaded, timeout=5000)
    qtbot.waitUntil(lambda: slicer.prefetches_in_flight() == 0, timeout=5000)  # at rest: 9 and 7
    server.wait_idle()
    assert plane_requests(server, 10) == 0  # what a read-ahead of the last stride would read


def test_only_a_fast_drag_holds_its_data_level_reads():
    """``Move.hold_s``: a step that comes within ``FAST_INTERVAL_S`` of the one before, at any
    stride, holds its data-level reads ``HOLD_STEPS`` step intervals; anything else reads at once."""
    import pytest

    from napari_async_slicing.components._motion import FAST_INTERVAL_S, HOLD_STEPS, Motion

    clock = [0.0]
    motion = Motion(clock=lambda: clock[0])

    def step_at(t: float, z: int):
        clock[0] = t
        return motion.step((z, 0, 0))

    assert step_at(0.0, 0) is None  # the first step: no move yet
    assert step_at(1.0, 1).hold_s == 0  # a step from rest (a click, a key) reads at once
    assert step_at(1.04, 2).hold_s == pytest.approx(HOLD_STEPS * 0.04)
    assert step_at(1.07, 5).hold_s == pytest.approx(HOLD_STEPS * 0.03)  # uneven strides: a drag
    assert step_at(1.07 + FAST_INTERVAL_S * 1.5, 6).hold_s == 0  # slow (napari's play, say)
