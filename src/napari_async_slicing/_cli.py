"""``napari-async-slicing``: view, demo, serve."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from napari_async_slicing import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='napari-async-slicing',
        description='napari with a slicer that never freezes the UI.',
    )
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    sub = parser.add_subparsers(dest='command', required=True)

    view = sub.add_parser('view', help='open a local or http(s) zarr / OME-Zarr in napari')
    view.add_argument('path', help='path or URL of a zarr array or OME-Zarr image')
    view.add_argument('--store', choices=('obstore', 'fsspec'), default='obstore')
    view.add_argument('--screenshot', type=Path, help='write a screenshot once loaded, then exit')

    demo = sub.add_parser('demo', help='scrub a built-in OME-Zarr served on 127.0.0.1 with realistic latency')
    demo.add_argument(
        '--headless',
        action='store_true',
        default=os.environ.get('NAPARI_ASYNC_SLICING_HEADLESS') == '1',
        help='scrub automatically, write a screenshot and a report, then exit',
    )
    demo.add_argument('--latency', type=float, default=0.1, help='seconds per HTTP request')
    demo.add_argument('--size', choices=('tiny', 'small', 's1'), default='small')
    demo.add_argument('--out', type=Path, default=Path('out'), help='folder for --headless output')

    sub.add_parser('serve', help='serve zarr data over HTTP on 127.0.0.1 (testing server)', add_help=False)
    sub.add_parser('bench', help='napari sync vs napari async vs ours, side by side (S1-S6)', add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['serve']:
        from napari_async_slicing.testing import serve_main

        return serve_main(argv[1:])
    if argv[:1] == ['bench']:
        from napari_async_slicing._bench import bench_main

        return bench_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == 'view':
        return _view(args)
    return _demo(args)


def _view(args: argparse.Namespace) -> int:
    import napari

    import napari_async_slicing
    from napari_async_slicing._io import open_image

    napari_async_slicing.enable()
    data, kwargs = open_image(args.path, store=args.store)
    viewer = napari.Viewer()
    viewer.add_image(data, **kwargs)
    if args.screenshot:
        viewer.screenshot(str(args.screenshot), canvas_only=False)
        viewer.close()
        return 0
    napari.run()
    return 0


#: The demo window's share of the screen's available area (each side), and its largest size.
DEMO_SCREEN_SHARE = 0.95
DEMO_MAX_SIZE = (1600, 1000)


def open_demo(url: str) -> tuple[Any, Any, Any]:
    """The demo's viewer on ``url`` (our slicer must be enabled): the image layer, the latency
    readout docked below the canvas (a wide, short strip: the canvas keeps the window's width),
    and the window sized to most of the screen. Returns ``(viewer, layer, readout)``."""
    import napari
    from qtpy.QtGui import QGuiApplication
    from qtpy.QtWidgets import QApplication

    from napari_async_slicing._io import open_image
    from napari_async_slicing._qt._latency_widget import LatencyWidget

    data, kwargs = open_image(url)
    viewer = napari.Viewer(title='napari-async-slicing demo')
    layer = viewer.add_image(data, **kwargs)
    readout = LatencyWidget(viewer)
    viewer.window.add_dock_widget(readout, name='slicing latency', area='bottom')
    primary = QGuiApplication.primaryScreen()
    assert primary is not None  # the demo runs on a display (Xvfb when headless)
    screen = primary.availableGeometry()
    viewer.window.resize(
        min(DEMO_MAX_SIZE[0], int(screen.width() * DEMO_SCREEN_SHARE)),
        min(DEMO_MAX_SIZE[1], int(screen.height() * DEMO_SCREEN_SHARE)),
    )
    QApplication.processEvents()  # the canvas takes its new size...
    viewer.reset_view()  # ...and the image is fitted to it, not to the window's first size
    return viewer, layer, readout


def _demo(args: argparse.Namespace) -> int:
    import napari
    from qtpy.QtCore import QEventLoop, QTimer

    import napari_async_slicing
    from napari_async_slicing._napari_compat import close_notifications
    from napari_async_slicing.testing import ZarrHTTPServer, sample_data

    path = sample_data('cells', args.size)
    server = ZarrHTTPServer(path.parent, latency=args.latency, max_seconds=3600).start()
    napari_async_slicing.enable()
    viewer, layer, readout = open_demo(server.url_for(path.name))
    print(f'demo: serving {path.name} at {server.url} with {args.latency * 1000:.0f} ms per request')
    if not args.headless:
        napari.run()
        server.stop()
        return 0

    report: dict[str, Any] = {'latency_s': args.latency, 'size': args.size}
    nz = viewer.dims.nsteps[0]
    steps = [min(nz - 1, s) for s in range(0, nz, max(1, nz // 25))][:25]
    state: dict[str, Any] = {'i': 0, 'gaps': [], 'last': time.perf_counter()}

    def heartbeat() -> None:
        now = time.perf_counter()
        state['gaps'].append(now - state['last'])
        state['last'] = now

    beat = QTimer()
    beat.timeout.connect(heartbeat)
    beat.start(5)

    def step() -> None:
        if state['i'] < len(steps):
            viewer.dims.current_step = (steps[state['i']], *viewer.dims.current_step[1:])
            state['i'] += 1
            QTimer.singleShot(40, step)
            return
        state['stopped'] = time.perf_counter()
        wait_loaded()

    def wait_loaded() -> None:
        if not layer.loaded:
            QTimer.singleShot(5, wait_loaded)
            return
        report['final_plane_after_last_step_s'] = round(time.perf_counter() - state['stopped'], 4)
        finish()

    def finish() -> None:
        # Everything that needs the window happens inside the loop.
        if state.get('finished'):
            return
        state['finished'] = True
        beat.stop()
        gaps = state['gaps'][2:] or [0.0]
        report.update(
            steps=len(steps),
            final_step=int(viewer.dims.current_step[0]),
            completed=state['i'] == len(steps) and 'final_plane_after_last_step_s' in report,
            max_main_thread_gap_ms=round(max(gaps) * 1000, 1),
            wall_s=round(time.perf_counter() - t0, 2),
            server_requests=server.requests,
        )
        args.out.mkdir(parents=True, exist_ok=True)
        readout.refresh()
        report['readout'] = readout.label.text().splitlines()
        close_notifications(viewer)  # napari's PyQt5 deprecation toast would cover the canvas
        viewer.screenshot(str(shot), canvas_only=False)
        (args.out / 'demo-report.json').write_text(json.dumps(report, indent=2))
        viewer.close()
        loop.quit()

    shot = args.out / 'demo.png'
    # A local event loop, not the application's: app.quit() has side effects (Qt 6 closes all
    # windows) that outlive the demo when it runs inside another program or a test.
    loop = QEventLoop()
    t0 = time.perf_counter()
    QTimer.singleShot(500, step)
    QTimer.singleShot(60_000, finish)  # bound: never hang
    loop.exec()
    print(json.dumps(report, indent=2))
    print(f'demo: wrote {shot} and {args.out / "demo-report.json"}')
    server.stop()
    return 0


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
