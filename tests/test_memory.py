"""What a scrub leaves behind is freed as it goes (reference counting), not only by a full
garbage collection.

Issue 22: RSS grew +122..+135 MiB over 60 s of random-walk scrub with the cache off, and fell back
at the end: the futures ``submit`` returns were each in a reference cycle (with their done
callbacks) that held the slice response, texture and all, until Python's cycle collector ran a
full collection (every 20-30 s there, 100-200 ms of main-thread time each).
"""

from __future__ import annotations

import gc
import types
from contextlib import contextmanager

import numpy as np
import pytest

from napari_async_slicing.testing import ZarrHTTPServer, make_volume, open_remote_array

MiB = 1024 * 1024
VOLUME = (24, 512, 512)  # uint16: 512 KiB a plane, in four chunks


@pytest.fixture(scope='module')
def planes(tmp_path_factory):
    path = make_volume(tmp_path_factory.mktemp('memory') / 'planes.zarr', shape=VOLUME, chunks=(1, 256, 256))
    with ZarrHTTPServer(path.parent, latency=0.01, max_seconds=300) as server:
        yield server.url_for('planes.zarr')


@contextmanager
def collector_off():
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def bytes_held_by_cycles() -> tuple[int, list[str]]:
    """Bytes of the arrays (and large bytes objects) that only unreachable reference cycles
    hold, and what holds the largest ones."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
    finally:
        gc.set_debug(0)
    garbage, gc.garbage[:] = list(gc.garbage), []
    held: dict[int, int] = {}
    owners: dict[str, int] = {}
    for obj in garbage:
        for ref in gc.get_referents(obj):
            if isinstance(ref, np.ndarray):
                while isinstance(ref.base, np.ndarray):
                    ref = ref.base
                size = ref.nbytes if ref.base is None else 0
            elif isinstance(ref, bytes | bytearray):
                size = len(ref)
            else:
                continue
            if id(ref) not in held:
                held[id(ref)] = size
                name = f'frame {obj.f_code.co_name}' if isinstance(obj, types.FrameType) else type(obj).__name__
                owners[name] = owners.get(name, 0) + size
    del garbage
    top = sorted(owners.items(), key=lambda item: -item[1])[:5]
    return sum(held.values()), [f'{name}: {size / MiB:.1f} MiB' for name, size in top]


@pytest.mark.parametrize('cache_bytes', [0, 64 * MiB], ids=['cache-off', 'cache-on'])
def test_a_scrub_leaves_no_plane_to_the_cycle_collector(viewer_with, planes, qtbot, cache_bytes):
    viewer = viewer_with(cache_bytes=cache_bytes)
    # Two layers: a step submits both at once (the slicer merges their futures).
    layers = [viewer.add_image(open_remote_array(planes), contrast_limits=(0, 4000), name=f'remote {i}')
              for i in range(2)]
    slicer = viewer._layer_slicer
    slicer.wait_until_idle(timeout=30)
    qtbot.waitUntil(lambda: all(layer.loaded for layer in layers), timeout=30000)
    with collector_off():
        for z in [*range(VOLUME[0]), *range(VOLUME[0] - 1, -1, -3)]:
            viewer.dims.set_current_step(0, z)
            qtbot.wait(15)
        slicer.wait_until_idle(timeout=30)
        qtbot.waitUntil(lambda: all(layer.loaded for layer in layers), timeout=30000)
        held, owners = bytes_held_by_cycles()
    plane = VOLUME[1] * VOLUME[2] * 2
    print(f'held by reference cycles: {held / MiB:.2f} MiB {owners}')
    # 32 steps of two layers: a response per step and layer held was 60+ planes (textures are
    # float32: twice a plane); a cancelled read's traceback kept its chunks.
    assert held <= plane, f'{held / MiB:.1f} MiB held by reference cycles: {owners}'
