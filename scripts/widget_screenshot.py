"""Write docs/widget.png: the plugin widget docked in a viewer scrubbing a remote OME-Zarr.

    xvfb-run -a -s "-screen 0 1920x1080x24" env QT_QPA_PLATFORM=xcb PYTHONPATH=src \
        python scripts/widget_screenshot.py docs/widget.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari
from qtpy.QtCore import QEventLoop, QTimer

from napari_async_slicing._napari_compat import close_notifications
from napari_async_slicing._qt._plugin_widget import AsyncSlicingWidget
from napari_async_slicing.testing import ZarrHTTPServer, sample_data


def pump(ms: int) -> None:
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec_()


def register_plugin() -> None:
    """Our npe2 manifest, as a ``pip install`` registers it (this script runs from a clone)."""
    import npe2

    pm = npe2.PluginManager.instance()
    pm.discover()
    if 'napari-async-slicing' not in pm._manifests:
        manifest = Path(__file__).resolve().parents[1] / 'src/napari_async_slicing/napari.yaml'
        pm.register(npe2.PluginManifest.from_file(manifest))


def main(out: str) -> int:
    register_plugin()
    path = sample_data('ome', 'small')
    with ZarrHTTPServer(path.parent, latency=0.08, max_seconds=600) as server:
        viewer = napari.Viewer(title='napari-async-slicing plugin widget')
        viewer.window.resize(1700, 900)
        widget = AsyncSlicingWidget(viewer)
        viewer.window.add_dock_widget(widget, name='Async slicing', area='right')
        widget.url.setText(server.url_for(path.name))
        widget.open_url()  # our reader: turns async slicing on for this viewer
        image = viewer.layers[0]
        for z in list(range(4, 24)) + [23, 22, 21, 20, 12]:
            viewer.dims.current_step = (z, *viewer.dims.current_step[1:])
            pump(60)
        for _ in range(200):
            if all(layer.loaded for layer in viewer.layers):
                break
            pump(50)
        pump(600)  # the readout ticks
        close_notifications(viewer)  # napari's PyQt5 deprecation toast would cover the canvas
        viewer.layers.selection.active = image
        pump(300)
        assert image.multiscale
        viewer.window.screenshot(out, canvas_only=False)
        viewer.close()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else str(Path('docs/widget.png'))))
