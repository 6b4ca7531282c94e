"""The command line: --version, view (local/HTTP zarr and OME-Zarr), and the headless demo."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from imageio.v3 import imread

import napari_async_slicing
from napari_async_slicing import _cli
from napari_async_slicing._io import open_image
from napari_async_slicing.testing import ZarrHTTPServer, make_ome_zarr


def test_version_and_help():
    out = subprocess.run(
        [sys.executable, '-m', 'napari_async_slicing._cli', '--version'],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert napari_async_slicing.__version__ in out.stdout
    with pytest.raises(SystemExit):
        _cli.main(['--help'])


@pytest.fixture(scope='module')
def ome_path(tmp_path_factory):
    return make_ome_zarr(
        tmp_path_factory.mktemp('ome') / 'image.ome.zarr', shape=(6, 128, 128), chunks=(1, 64, 64)
    )


@pytest.mark.parametrize('store', ['obstore', 'fsspec'])
def test_open_remote_ome_zarr_as_multiscale(ome_path, store):
    with ZarrHTTPServer(ome_path.parent, max_seconds=120) as server:
        before = server.chunk_requests
        data, kwargs = open_image(server.url_for(ome_path.name), store=store)
        assert server.chunk_requests == before  # metadata only
        assert isinstance(data, list) and len(data) == 4
        assert [a.shape for a in data][:2] == [(6, 128, 128), (6, 64, 64)]
        assert 'contrast_limits' in kwargs  # from the omero window


def test_view_opens_http_ome_zarr_and_screenshots(ome_path, tmp_path, qapp, monkeypatch):
    monkeypatch.setattr(napari_async_slicing, '_options', None)
    shot = tmp_path / 'view.png'
    with ZarrHTTPServer(ome_path.parent, latency=0.02, max_seconds=120) as server:
        try:
            assert _cli.main(['view', server.url_for(ome_path.name), '--screenshot', str(shot)]) == 0
        finally:
            napari_async_slicing.disable()
        assert server.chunk_requests > 0
    image = imread(str(shot))
    assert image.shape[0] > 100 and image[..., :3].std() > 5  # a real window, not a blank frame


def test_demo_headless_writes_screenshot_and_report(tmp_path, qapp):
    try:
        assert _cli.main(['demo', '--headless', '--size', 'tiny', '--latency', '0.02',
                          '--out', str(tmp_path)]) == 0
    finally:
        napari_async_slicing.disable()
    report = json.loads((tmp_path / 'demo-report.json').read_text())
    assert report['completed']  # every step was taken and the final plane was loaded
    assert report['server_requests'] > 0
    image = imread(str(tmp_path / 'demo.png'))
    assert image[..., :3].std() > 5
    assert np.isfinite(report['final_plane_after_last_step_s'])


def test_demo_window_gives_the_canvas_most_of_it_and_shows_the_readout_whole(qapp, qtbot):
    from qtpy.QtCore import QPoint, QRect

    from napari_async_slicing._napari_compat import canvas_widget_of, main_window_of
    from napari_async_slicing.testing import sample_data, which_plane

    from .conftest import vispy_data

    path = sample_data('cells', 'tiny')
    with ZarrHTTPServer(path.parent, latency=0.01, max_seconds=120) as server, napari_async_slicing.enabled():
        viewer, layer, readout = _cli.open_demo(server.url_for(path.name))
        try:
            window, canvas = main_window_of(viewer), canvas_widget_of(viewer)
            viewer.dims.current_step = (4, *viewer.dims.current_step[1:])
            qtbot.waitUntil(lambda: layer.loaded and readout.isVisible(), timeout=10_000)
            raw = vispy_data(viewer, layer).astype(np.uint16)
            assert which_plane(raw, level=layer.data_level, content='cells') == 4  # the planes tell apart
            assert canvas.width() * canvas.height() > 0.5 * window.width() * window.height()

            readout.refresh()
            label = readout.label
            assert len(label.text().splitlines()) == 3  # header, the layer, the cache
            assert label.width() >= label.sizeHint().width() and label.height() >= label.sizeHint().height()
            shown = QRect(label.mapTo(window, QPoint(0, 0)), label.size())
            assert window.rect().contains(shown)
            dock = readout.parentWidget()
            title = dock.titleBarWidget()
            inside = QRect(label.mapTo(dock, QPoint(0, 0)), label.size())
            assert title is None or not title.geometry().intersects(inside), 'the title bar covers the readout'
        finally:
            viewer.close()
