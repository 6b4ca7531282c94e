"""Fault injection through the real HTTP server: errors, corrupt chunks, the server going away.

In every case the user gets a clear, rate-limited notification naming the layer, the layer leaves
"loading", the main thread keeps beating, and once the fault stops the next step shows the right
plane.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_async_slicing._bench._probe import Heartbeat
from napari_async_slicing.testing import ZarrHTTPServer, open_remote_array, which_plane

from .conftest import SHAPE, vispy_data

CLIM = (0, 64 * SHAPE[0] + 64)
#: Largest main-thread gap tolerated while faults are handled: this catches a viewer that blocks
#: on a failing read (a retry, a timeout or a stall waited for on the main thread: seconds). The
#: heartbeat ticks every 5 ms; gaps measured on a quiet machine are 20-100 ms (printed, and in the
#: issue notes), but on a 2-core machine under other load scheduler and software-GL hiccups alone
#: reach 200 ms.
RESPONSIVE_MS = 400
FRAME_MS = 16


def shown_plane(viewer, layer):
    return which_plane(vispy_data(viewer, layer).astype(np.uint16))


def step_to(viewer, z: int) -> None:
    viewer.dims.current_step = (z, *viewer.dims.current_step[1:])


@pytest.fixture
def heartbeat():
    hb = Heartbeat(5).start()
    yield hb
    hb.stop()


def max_gap_ms(hb: Heartbeat, t0: float) -> float:
    """Largest gap between heartbeat ticks since ``t0`` (including up to now)."""
    beats = [t for t in hb.beats if t >= t0] + [time.perf_counter()]
    gap = max(np.diff(beats), default=0.0) * 1000
    print(f'max main-thread gap while the fault was handled: {gap:.1f} ms')  # for the issue notes
    return gap


def add_remote(viewer, remote_volume, name='remote'):
    with viewer.sync_slicing():
        return viewer.add_image(remote_volume, contrast_limits=CLIM, name=name)


def test_scrub_with_30_percent_server_errors(viewer, server, remote_volume, qtbot, errors, heartbeat):
    layer = add_remote(viewer, remote_volume)
    server.configure(failure_rate=0.3, failure_mode='500', latency=0.02)
    for z in range(1, 9):
        step_to(viewer, z)
        qtbot.wait(40)  # a slider drag: one step every 40 ms
    t0 = time.perf_counter()  # the UI's own work for the steps is done: retries run from here
    qtbot.waitUntil(lambda: layer.loaded, timeout=15000)
    assert server.failures_injected > 0
    # Retries hide most failures: the last plane is shown, or its failure was reported.
    assert shown_plane(viewer, layer) == 8 or any("layer 'remote'" in str(e) for e in errors)
    seconds = time.perf_counter() - t0 + 0.4
    assert len(errors) <= seconds + 1  # at most one notification per layer per second
    assert max_gap_ms(heartbeat, t0) < RESPONSIVE_MS
    server.configure(failure_rate=0.0)
    step_to(viewer, 3)
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 3 and layer.loaded, timeout=5000)


def test_corrupt_chunks_are_reported_not_shown(viewer, server, remote_volume, qtbot, errors, heartbeat):
    layer = add_remote(viewer, remote_volume)
    before = vispy_data(viewer, layer).copy()
    server.configure(failure_rate=1.0, failure_mode='corrupt')
    step_to(viewer, 9)
    t0 = time.perf_counter()
    qtbot.waitUntil(lambda: layer.loaded and bool(errors), timeout=10000)
    assert "layer 'remote'" in str(errors[0]) and '(9,' in str(errors[0])
    np.testing.assert_array_equal(vispy_data(viewer, layer), before)  # garbage never shown
    assert max_gap_ms(heartbeat, t0) < RESPONSIVE_MS
    server.configure(failure_rate=0.0)
    step_to(viewer, 10)
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 10 and layer.loaded, timeout=5000)


def test_server_gone_mid_scrub_then_back(viewer, server, volume_path, remote_volume, qtbot, errors, heartbeat):
    layer = add_remote(viewer, remote_volume)
    port = server.port
    server.configure(latency=0.3)
    step_to(viewer, 2)
    qtbot.waitUntil(lambda: server.in_flight > 0, timeout=3000)
    server.stop()  # mid-read
    step_to(viewer, 4)
    t0 = time.perf_counter()
    qtbot.waitUntil(lambda: layer.loaded and bool(errors), timeout=20000)
    assert "layer 'remote'" in str(errors[-1])
    assert max_gap_ms(heartbeat, t0) < RESPONSIVE_MS
    with ZarrHTTPServer(volume_path.parent, port=port, max_seconds=120):
        step_to(viewer, 6)
        qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 6 and layer.loaded, timeout=10000)


def test_stalled_server_is_reported_after_the_read_timeout(viewer_with, server, remote_volume, qtbot, errors, heartbeat):
    viewer = viewer_with(read_timeout=1.0, prefetch_radius=0)
    layer = add_remote(viewer, remote_volume)
    server.configure(failure_rate=1.0, failure_mode='stall', stall_seconds=20)
    t_step = time.perf_counter()
    step_to(viewer, 7)
    t0 = time.perf_counter()
    # One timeout, not four retries of it, and far from the 20 s stall.
    qtbot.waitUntil(lambda: layer.loaded and bool(errors), timeout=8000)
    assert time.perf_counter() - t_step < 6
    assert "layer 'remote'" in str(errors[0]) and 'Timeout' in str(errors[0])
    assert max_gap_ms(heartbeat, t0) < RESPONSIVE_MS
    server.configure(failure_rate=0.0)
    step_to(viewer, 8)
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 8 and layer.loaded, timeout=5000)


def test_reporting_a_failure_takes_little_main_thread_time(viewer, server, remote_volume, qtbot):
    """A notification is its message (layer, step, cause): no traceback formatted on the main
    thread, even with napari's console notifications on (its formatter renders every frame's
    locals). Most of what is left is napari's own popup widget (a few ms): within one frame."""
    from napari.settings import get_settings
    from napari.utils.notifications import NotificationSeverity, notification_manager

    layer = add_remote(viewer, remote_volume)
    applier = viewer._layer_slicer._applier
    report, cpu_ms = applier._report, []

    def timed(*args):
        t0 = time.thread_time()
        report(*args)
        cpu_ms.append((time.thread_time() - t0) * 1000)

    applier._report = timed
    shown: list = []
    notification_manager.notification_ready.connect(shown.append)
    settings = get_settings().application
    level = settings.console_notification_level
    settings.console_notification_level = NotificationSeverity.ERROR
    try:
        server.configure(failure_rate=1.0, failure_mode='500')
        step_to(viewer, 2)
        qtbot.waitUntil(lambda: layer.loaded and bool(shown), timeout=15000)
    finally:
        settings.console_notification_level = level
        notification_manager.notification_ready.disconnect(shown.append)
    print(f'main-thread CPU of reporting a failure: {max(cpu_ms):.2f} ms')  # for the issue notes
    message = shown[0].message
    assert "layer 'remote'" in message and '(2,' in message and '500' in message
    assert 'Traceback' not in message
    assert max(cpu_ms) < FRAME_MS


@pytest.fixture(scope='module')
def many_chunks(tmp_path_factory):
    """Planes of 64 chunks: a read that fails whole when one chunk fails rarely gets through."""
    from napari_async_slicing.testing import make_volume

    return make_volume(tmp_path_factory.mktemp('chunks') / 'many.zarr', shape=(6, 256, 256), chunks=(1, 32, 32))


@pytest.mark.parametrize('cache_bytes', [None, 0], ids=['cache', 'no-cache'])
def test_each_chunk_is_retried_so_the_plane_arrives(viewer_with, many_chunks, qtbot, errors, cache_bytes):
    import dask.array as da

    options = {} if cache_bytes is None else {'cache_bytes': cache_bytes}
    viewer = viewer_with(prefetch_radius=0, **options)
    with ZarrHTTPServer(many_chunks.parent, max_seconds=120) as server:
        remote = open_remote_array(server.url_for('many.zarr'))
        with viewer.sync_slicing():
            layer = viewer.add_image(remote, contrast_limits=(0, 4000), name='remote')
            # The same array under a dask graph: its chunks are ours to fetch and retry too.
            under_dask = viewer.add_image(da.from_zarr(remote), contrast_limits=(0, 4000), name='dask')
        server.configure(failure_rate=0.2, failure_mode='500', latency=0.005)
        for z in (0, 1, 4):
            step_to(viewer, z)
            qtbot.waitUntil(lambda: layer.loaded and under_dask.loaded, timeout=20000)
            assert errors == []
            assert shown_plane(viewer, layer) == z and shown_plane(viewer, under_dask) == z
        assert server.failures_injected > 20


def test_non_transient_failures_are_not_retried(viewer_with, server, remote_volume, qtbot, errors):
    viewer = viewer_with(prefetch_radius=0)
    layer = add_remote(viewer, remote_volume)
    server.configure(failure_rate=1.0, failure_mode='corrupt')
    server.reset_counters()
    step_to(viewer, 3)
    qtbot.waitUntil(lambda: layer.loaded and bool(errors), timeout=10000)
    assert server.chunk_requests <= 4  # the plane's 4 chunks, each asked once
