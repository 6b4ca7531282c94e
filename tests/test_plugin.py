"""The napari plugin face: npe2 manifest, dock widget (live toggle, options, readout), reader."""

from __future__ import annotations

from napari_async_slicing import _live

import json
import os
import re
import sys
from importlib import metadata
from pathlib import Path

import npe2
import numpy as np
import pytest
from napari.components._layer_slicer import _LayerSlicer

import napari_async_slicing
from napari_async_slicing import _napari_compat as compat
from napari_async_slicing._live import default_options
from napari_async_slicing._options import MiB, SlicingOptions
from napari_async_slicing._qt._latency_widget import format_stats, hit_rate


def hit_rate_text(row: dict) -> str:
    rate = hit_rate(row)
    return 'n/a' if rate is None else f'{rate * 100:.0f}%'
from napari_async_slicing._qt._plugin_widget import AsyncSlicingWidget
from napari_async_slicing._reader import get_reader
from napari_async_slicing._reading._tensorstore import available as tensorstore_available
from napari_async_slicing.components._layer_slicer import AsyncLayerSlicer
from napari_async_slicing.testing import ZarrHTTPServer, sample_data

from .conftest import SHAPE, slicer_threads
from .test_slicer import CLIM, shown_plane, step_to

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / 'src' / 'napari_async_slicing' / 'napari.yaml'
PLUGIN = 'napari-async-slicing'
OPTION_ENV = [f'NAPARI_ASYNC_SLICING_{f.upper()}' for f in SlicingOptions.__dataclass_fields__]


@pytest.fixture
def plugin_registered(npe2pm):
    """Our manifest registered with a test plugin manager, as a ``pip install`` makes napari find
    it (npe2's ``npe2pm`` fixture: no other plugin, nothing left behind)."""
    with npe2pm.tmp_plugin(manifest=str(MANIFEST)):
        yield npe2pm


@pytest.fixture
def clean_option_env():
    """Option environment variables unset now and restored afterwards: the widget's "use as
    defaults" writes them to ``os.environ`` (``monkeypatch.delenv`` of an unset name records
    nothing to undo, so they leaked into later tests' viewers)."""
    saved = {name: os.environ.pop(name) for name in OPTION_ENV if name in os.environ}
    yield
    for name in OPTION_ENV:
        os.environ.pop(name, None)
    os.environ.update(saved)


@pytest.fixture
def plain_viewer(make_napari_viewer):
    """A shown viewer with napari's own slicer (async slicing not enabled): how napari starts."""
    assert not napari_async_slicing.is_enabled()
    viewer = make_napari_viewer(show=True)
    assert type(viewer._layer_slicer) is _LayerSlicer
    return viewer


def add_remote_sync(viewer, remote_volume, **kwargs):
    with compat.layer_slicer(viewer).force_sync():
        return viewer.add_image(remote_volume, contrast_limits=CLIM, **kwargs)


# --- manifest ------------------------------------------------------------------------------


def test_manifest_validates_and_is_declared_for_pip_installs():
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == PLUGIN
    assert [w.display_name for w in manifest.contributions.widgets] == ['Async slicing']
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    for python_name in commands.values():  # every command resolves to a real object
        module, attr = python_name.split(':')
        assert getattr(__import__(module, fromlist=[attr]), attr)

    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())
    entry = project['project']['entry-points']['napari.manifest']
    assert entry == {PLUGIN: 'napari_async_slicing:napari.yaml'}
    package_data = project['tool']['setuptools']['package-data']['napari_async_slicing']
    assert 'napari.yaml' in package_data
    try:
        dist = metadata.distribution(PLUGIN)
    except metadata.PackageNotFoundError:
        return  # not pip-installed here: the declaration above is what a wheel carries
    points = [e for e in dist.entry_points if e.group == 'napari.manifest']
    assert [e.value for e in points] == ['napari_async_slicing:napari.yaml']


def test_widget_and_reader_are_discoverable_through_npe2(plugin_registered):
    pm = plugin_registered
    widgets = [(w.plugin_name, w.display_name) for w in pm.iter_widgets()]
    assert (PLUGIN, 'Async slicing') in widgets
    for path in ('http://127.0.0.1:8000/image.ome.zarr', 'https://host/data/image.zarr/'):
        readers = [r.plugin_name for r in pm.iter_compatible_readers([path])]
        assert PLUGIN in readers, path
        assert get_reader(path) is not None
    assert get_reader('https://host/picture.png') is None


def test_plugin_menu_docks_the_widget(plugin_registered, plain_viewer):
    dock, widget = plain_viewer.window.add_plugin_dock_widget(PLUGIN, 'Async slicing')
    assert isinstance(widget, AsyncSlicingWidget)
    assert not widget.use_async.isChecked()  # napari's own slicer is in use
    assert "napari's own slicer" in widget.readout.label.text()


# --- live toggle -----------------------------------------------------------------------------


def test_live_toggle_during_a_scrub(plain_viewer, server, remote_volume, qtbot, clean_option_env):
    viewer = plain_viewer
    errors = []
    from napari.utils.notifications import notification_manager

    notification_manager.notification_ready.connect(errors.append)
    layer = add_remote_sync(viewer, remote_volume, name='remote')
    widget = AsyncSlicingWidget(viewer)
    qtbot.addWidget(widget)

    # on: the current plane is sliced again by our slicer, off the main thread
    server.configure(latency=0.2)
    widget.use_async.setChecked(True)
    ours = viewer._layer_slicer
    assert isinstance(ours, AsyncLayerSlicer) and not layer.loaded
    qtbot.waitUntil(lambda: layer.loaded, timeout=5000)
    assert shown_plane(viewer, layer) == viewer.dims.current_step[0]

    # scrub, and turn it off while a read is in flight
    server.configure(latency=2.0)
    for z in (1, 2, 3):
        step_to(viewer, z)
    qtbot.waitUntil(lambda: server.in_flight > 0, timeout=3000)
    server.configure(latency=0.05)
    widget.use_async.setChecked(False)  # cancels the 2 s reads
    assert type(viewer._layer_slicer) is _LayerSlicer
    assert ours.is_shut_down and not _live.slicer_threads_alive(ours)
    assert slicer_threads() == []
    qtbot.waitUntil(lambda: layer.loaded, timeout=5000)  # napari's slicer: synchronous here
    assert shown_plane(viewer, layer) == 3
    step_to(viewer, 4)
    assert shown_plane(viewer, layer) == 4

    # on again, mid-scrub: the newest plane wins, old responses never show
    widget.use_async.setChecked(True)
    again = viewer._layer_slicer
    assert isinstance(again, AsyncLayerSlicer) and again is not ours
    for z in (6, 7, 8):
        step_to(viewer, z)
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 8 and layer.loaded, timeout=5000)
    assert widget.use_async.isChecked()

    # the layers-removed hook moved with the slicer
    extra = viewer.add_image(np.zeros((SHAPE[0], 8, 8), np.float32))
    qtbot.waitUntil(lambda: again.knows(extra), timeout=5000)
    viewer.layers.remove(extra)
    assert not again.knows(extra)
    assert [e for e in errors if getattr(e, 'severity', '') == 'error'] == []
    notification_manager.notification_ready.disconnect(errors.append)


def test_swap_from_napari_async_never_waits_for_its_running_read(
    plain_viewer, server, remote_volume, qtbot
):
    """napari's own async slicer (preference on) mid-read: the swap leaves its read to finish
    unseen on its thread instead of blocking the main thread; its plane never shows."""
    from napari.settings import get_settings

    from .test_slicer import record_shown

    viewer = plain_viewer
    settings = get_settings()
    previous = settings.experimental.async_
    settings.experimental.async_ = True
    try:
        layer = add_remote_sync(viewer, remote_volume, name='remote')
        napari_slicer = viewer._layer_slicer
        assert not napari_slicer._force_sync
        server.configure(latency=2.0)
        step_to(viewer, 2)
        qtbot.waitUntil(lambda: server.in_flight > 0, timeout=3000)  # napari's worker reads plane 2
        server.configure(latency=0.05)
        shown = record_shown(viewer, layer)
        ours = napari_async_slicing.enable_in(viewer)
        assert _live.slicer_threads_alive(napari_slicer)  # returned without waiting for it
        step_to(viewer, 7)
        qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 7 and layer.loaded, timeout=5000)
        qtbot.waitUntil(lambda: not _live.slicer_threads_alive(napari_slicer), timeout=5000)
        qtbot.wait(100)  # anything napari's finished read could still post is processed
        assert 2 not in shown and shown_plane(viewer, layer) == 7
        assert viewer._layer_slicer is ours
    finally:
        settings.experimental.async_ = previous


def test_swap_is_a_no_op_for_the_slicer_in_use(viewer):
    slicer = viewer._layer_slicer
    assert napari_async_slicing.enable_in(viewer) is slicer
    assert _live.swap_slicer(viewer, slicer) is slicer
    assert not slicer.is_shut_down


# --- options -----------------------------------------------------------------------------------


def test_options_apply_live_and_persist_for_the_session(
    viewer, server, remote_volume, qtbot, tmp_path, clean_option_env
):
    layer = add_remote_sync(viewer, remote_volume, name='remote')
    widget = AsyncSlicingWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.use_async.isChecked()
    assert widget.workers.value() == viewer._layer_slicer.options.workers
    old = viewer._layer_slicer
    log = tmp_path / 'latency.jsonl'
    widget.cache_mib.setValue(64)
    widget.workers.setValue(3)
    widget.heavy_slots.setValue(1)
    widget.prefetch_radius.setValue(0)
    engine = 'tensorstore' if tensorstore_available() else 'zarr'
    assert widget.read_engine.currentData() == 'auto'
    widget.read_engine.setCurrentIndex(widget.read_engine.findData(engine))
    widget.log_file.setText(str(log))
    widget.apply()
    options = viewer._layer_slicer.options
    assert (options.cache_bytes, options.workers, options.heavy_slots) == (64 * MiB, 3, 1)
    assert (options.prefetch_radius, options.log, options.read_engine) == (0, str(log), engine)
    assert viewer._layer_slicer.read_engine == engine
    assert old.is_shut_down and not _live.slicer_threads_alive(old)
    assert default_options().workers != 3  # not made the default

    step_to(viewer, 9)
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 9 and layer.loaded, timeout=5000)
    assert log.exists()

    widget.make_default.setChecked(True)
    widget.workers.setValue(2)
    widget.apply()
    assert viewer._layer_slicer.options.workers == 2
    assert default_options().workers == 2  # enable() in force: its options changed
    assert SlicingOptions.from_env().workers == 2  # and the environment of this session
    assert SlicingOptions.from_env().read_engine == engine
    shown_again = AsyncSlicingWidget(viewer)
    qtbot.addWidget(shown_again)
    assert shown_again.read_engine.currentData() == engine


def test_bad_log_path_is_a_notification_and_keeps_the_slicer(viewer, qtbot, tmp_path):
    from napari.utils.notifications import notification_manager

    widget = AsyncSlicingWidget(viewer)
    qtbot.addWidget(widget)
    slicer = viewer._layer_slicer
    shown = []
    notification_manager.notification_ready.connect(shown.append)
    widget.log_file.setText(str(tmp_path / 'missing-folder' / 'log.jsonl'))
    widget.apply()
    notification_manager.notification_ready.disconnect(shown.append)
    assert viewer._layer_slicer is slicer and not slicer.is_shut_down
    assert any('log.jsonl' in str(n.message) for n in shown)


# --- readout -----------------------------------------------------------------------------------


def test_readout_matches_the_slicer_and_the_latency_log(
    viewer, server, remote_volume, qtbot, tmp_path
):
    log = tmp_path / 'latency.jsonl'
    napari_async_slicing.enable_in(viewer, log=str(log))
    layer = add_remote_sync(viewer, remote_volume, name='remote')
    widget = AsyncSlicingWidget(viewer, interval_ms=100)
    qtbot.addWidget(widget)
    widget.show()  # the readout's timer runs while it is visible
    server.configure(latency=2.0)
    step_to(viewer, 1)
    qtbot.waitUntil(lambda: server.in_flight > 0, timeout=3000)
    qtbot.waitUntil(lambda: bool(re.search(r'remote .* +1 +0 +0 ', widget.readout.label.text())),
                    timeout=1500)  # one in flight, shown by the timer
    server.configure(latency=0.2)
    step_to(viewer, 9)  # cancels plane 1's read
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 9 and layer.loaded, timeout=5000)
    slicer = viewer._layer_slicer
    slicer.wait_until_idle(timeout=5)
    (row,) = slicer.stats()
    # Header and the layer's row (the cache line below moves with prefetch).
    qtbot.waitUntil(lambda: widget.readout.label.text().splitlines()[:2]
                    == format_stats([row]).splitlines()[:2], timeout=2000)

    text = widget.readout.label.text()
    fields = text.splitlines()[1].split()
    assert fields[0] == 'remote'
    last, p50 = float(fields[1]), float(fields[2])
    records = [json.loads(line) for line in log.read_text().splitlines()]
    applied = [r for r in records if r['outcome'] == 'applied']
    assert len(applied) == row['applied']
    assert abs(last - applied[-1]['applied_ms']) <= 1.0
    assert abs(p50 - np.median([r['applied_ms'] for r in applied])) <= 1.0
    assert int(fields[5]) == sum(r['outcome'] in ('cancelled', 'dropped') for r in records) >= 1
    assert fields[-1] == hit_rate_text(row)
    assert text.splitlines()[-1].startswith('chunk cache: ')
    widget.hide()
    assert not widget.readout._timer.isActive()


def test_readout_shows_cache_fields_when_the_slicer_reports_them():
    row = {'layer': 'remote', 'last_ms': 12.0, 'p50_ms': 10.0, 'p95_ms': 30.0, 'in_flight': 1,
           'applied': 5, 'stale': 0, 'cancelled': 2, 'dropped': 1, 'failed': 0}
    text = format_stats([{**row, 'cache_hits': 3, 'cache_misses': 1}],
                        {'max_bytes': 64 * MiB, 'bytes': 5 * MiB, 'hits': 3, 'misses': 1,
                         'prefetch': {'done': 2}})
    assert text.splitlines()[1].split()[-1] == '75%'
    assert text.splitlines()[-1] == ('chunk cache: 5.0 of 64 MiB, 3 hits, 1 misses;'
                                     ' prefetched 2 planes')
    assert format_stats([{**row, 'cache_hit_rate': 0.5}]).splitlines()[1].split()[-1] == '50%'
    assert format_stats([row]).splitlines()[1].split()[1:] == ['12', '10', '30', '1', '3', '0', 'n/a']
    assert format_stats([row]).splitlines()[-1] == 'chunk cache: n/a'
    assert format_stats([row], {'max_bytes': 0}).splitlines()[-1] == 'chunk cache: off'


# --- reader ------------------------------------------------------------------------------------


@pytest.fixture
def ome_server():
    path = sample_data('ome', 'tiny')
    with ZarrHTTPServer(path.parent, max_seconds=300) as srv:
        yield srv, path


def test_reader_opens_remote_ome_zarr_as_multiscale_with_our_slicer(
    plugin_registered, plain_viewer, ome_server, qtbot
):
    server, path = ome_server
    url = server.url_for(path.name)
    layers = plain_viewer.open(url, plugin=PLUGIN)
    assert isinstance(plain_viewer._layer_slicer, AsyncLayerSlicer)  # turned on by the reader
    image, labels = layers
    assert image.multiscale and len(image.data) == 4
    assert tuple(image.data[0].shape) == (6, 128, 128)
    assert image.contrast_limits[0] == 0 and image.contrast_limits[1] > 0  # omero window
    assert labels.__class__.__name__ == 'Labels'
    assert tuple(labels.scale) == (1.0, 8.0, 8.0)
    qtbot.waitUntil(lambda: image.loaded and labels.loaded, timeout=10000)
    assert server.chunk_requests > 0


def test_widget_open_url_field(plain_viewer, ome_server, qtbot, plugin_registered):
    server, path = ome_server
    widget = AsyncSlicingWidget(plain_viewer)
    qtbot.addWidget(widget)
    widget.url.setText(server.url_for(path.name))
    widget.open_url()
    assert [lyr.name for lyr in plain_viewer.layers][0] == 'image'
    assert widget.use_async.isChecked()
