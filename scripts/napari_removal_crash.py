"""Reproduce issue 8 with napari alone: no napari-async-slicing code, in-memory data, napari's own
synchronous slicing, no pytest.

The soak test's session (scrubs, revisits, layer add/pop, seed 0, actions back to back) segfaults in
vispy's ``glDrawArrays`` under Mesa llvmpipe (Xvfb) at the same action every run: after the 26th
layer pop. napari 0.9.2's ``VispyCanvas._clean_and_update_scenegraph`` executes vispy's queued GL
commands on layer removal (deleting the layer's textures, buffers and program, ``glFinish``)
without making the canvas's GL context current. ``--set-current`` makes it current first (what
``napari_async_slicing._napari_compat.canvas_current_on_layer_removal`` does) and the session
runs on.

    xvfb-run -a -s "-screen 0 1280x1024x24" env QT_QPA_PLATFORM=xcb python scripts/napari_removal_crash.py
    ... python scripts/napari_removal_crash.py --set-current

Exit status 139 (SIGSEGV) reproduces the crash; "survived N actions" means it did not happen.
"""

from __future__ import annotations

import argparse
import faulthandler
import random
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--actions', type=int, default=260)
    parser.add_argument('--set-current', action='store_true', help='make the canvas current first')
    args = parser.parse_args()
    faulthandler.enable()

    import napari
    from qtpy.QtWidgets import QApplication

    if args.set_current:
        from napari._vispy.canvas import VispyCanvas

        original = VispyCanvas._clean_and_update_scenegraph

        def clean(self):
            self._scene_canvas.set_current()
            original(self)

        VispyCanvas._clean_and_update_scenegraph = clean

    t0 = time.monotonic()

    def log(message: str) -> None:
        print(f'[{time.monotonic() - t0:7.2f}] {message}', flush=True)

    z = np.arange(64, dtype=np.uint16)[:, None, None]
    volume = (z * 60 + np.arange(512, dtype=np.uint16)[None, None, :] % 256).repeat(512, axis=1)
    rng = random.Random(args.seed)
    app = QApplication.instance() or QApplication([])
    viewer = napari.Viewer()
    viewer.add_image(volume, contrast_limits=(0, 4000))

    def wait(ms: int) -> None:
        end = time.perf_counter() + ms / 1000
        while True:
            app.processEvents()
            if time.perf_counter() >= end:
                break
            time.sleep(0.002)

    def step(plane: int) -> None:
        viewer.dims.set_current_step(0, plane)
        wait(rng.choice([0, 10, 40]))

    for plane in range(64):
        step(plane)
    for n in range(args.actions):  # the soak's session; no event processing between actions
        action = rng.random()
        if action < 0.5:
            start, length = rng.randrange(64), rng.randrange(2, 12)
            log(f'{n}: scrub {start}+{length}, {len(viewer.layers)} layers')
            for plane in range(start, min(64, start + length)):
                step(plane)
        elif action < 0.7:
            log(f'{n}: revisits')
            for _ in range(3):
                step(rng.randrange(64))
        elif action < 0.85 and len(viewer.layers) < 4:
            log(f'{n}: add layer')
            data = np.random.default_rng(rng.randrange(99)).random((64, 128, 128), dtype=np.float32)
            viewer.add_image(data)
        elif len(viewer.layers) > 1:
            log(f'{n}: pop layer')
            viewer.layers.pop(-1)
    log(f'survived {args.actions} actions')
    viewer.close()


if __name__ == '__main__':
    main()
