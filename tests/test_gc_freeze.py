"""The collector frozen at rest (option ``freeze_gc``), thawed when a layer leaves or a viewer closes."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from napari_async_slicing import _gc_freeze
from napari_async_slicing._options import SlicingOptions

from .test_slicer import add_remote, shown_plane, step_to


@pytest.fixture(autouse=True)
def thawed() -> Iterator[int]:
    """Nothing of ours frozen; what the interpreter keeps frozen itself (its count)."""
    _gc_freeze.thaw()
    yield gc.get_freeze_count()
    _gc_freeze.thaw()


def _rest_on(viewer, layer, qtbot, z: int) -> None:
    step_to(viewer, z)
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == z and layer.loaded, timeout=5000)


def test_a_viewer_at_rest_freezes_what_is_alive_and_removing_a_layer_thaws_it(
    viewer, remote_volume, qtbot, thawed
):
    """At rest most objects are frozen, so a full collection walks only the few made since; a
    removed layer is still collected (a frozen cycle would keep it and its data forever)."""
    layer = add_remote(viewer, remote_volume)
    _rest_on(viewer, layer, qtbot, 3)
    qtbot.waitUntil(_gc_freeze.frozen, timeout=3000)
    frozen = gc.get_freeze_count()
    assert frozen > 5 * len(gc.get_objects()), (frozen, len(gc.get_objects()))

    _rest_on(viewer, layer, qtbot, 4)  # later rests do not freeze again: nothing was thawed
    assert gc.get_freeze_count() <= frozen  # (frozen objects freed by their refcounts leave it)

    ref = weakref.ref(layer)
    viewer.layers.remove(layer)
    del layer
    assert not _gc_freeze.frozen() and gc.get_freeze_count() == thawed
    # (what the slicer still had queued for it, a posted call or a worker's answer, lets go)
    qtbot.waitUntil(lambda: (gc.collect(), ref() is None)[1], timeout=3000)


def test_a_rest_after_a_thaw_freezes_again_and_closing_the_viewer_thaws(
    slicer_enabled, make_napari_viewer, remote_volume, qtbot, thawed
):
    viewer = make_napari_viewer(show=True)
    kept = add_remote(viewer, remote_volume, name='kept')
    _rest_on(viewer, kept, qtbot, 3)
    qtbot.waitUntil(_gc_freeze.frozen, timeout=3000)
    viewer.layers.remove(add_remote(viewer, remote_volume, name='removed'))
    assert not _gc_freeze.frozen()
    _rest_on(viewer, kept, qtbot, 6)
    qtbot.waitUntil(_gc_freeze.frozen, timeout=3000)
    viewer.close()
    assert not _gc_freeze.frozen() and gc.get_freeze_count() == thawed


def test_freeze_gc_off_never_freezes(viewer_with, remote_volume, qtbot, thawed):
    viewer = viewer_with(freeze_gc=False)
    layer = add_remote(viewer, remote_volume)
    _rest_on(viewer, layer, qtbot, 3)
    caller = viewer._layer_slicer._applier.call_on_main
    viewer.window._qt_viewer.canvas.native.update()
    qtbot.waitUntil(lambda: not caller._after, timeout=3000)  # what waited for a frame ran
    assert not _gc_freeze.frozen() and gc.get_freeze_count() == thawed


@pytest.mark.parametrize(('raw', 'expected'), [('0', False), ('off', False), ('1', True), ('', True)])
def test_freeze_gc_from_the_environment(raw, expected):
    options = SlicingOptions.from_env({'NAPARI_ASYNC_SLICING_FREEZE_GC': raw})
    assert options.freeze_gc is expected
