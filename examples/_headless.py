"""Shared by the examples: ``napari.run()``, or headless (for tests and CI) when asked.

Set ``NAPARI_ASYNC_SLICING_EXAMPLE_SCREENSHOT=/path/shot.png`` (or pass ``--screenshot PATH``):
the example steps through a few slider positions under ``viewer.sync_slicing()`` (every slice
computed and shown before the next line runs), saves a screenshot of the canvas and exits.
"""

from __future__ import annotations

import os
import sys

import napari

ENV = 'NAPARI_ASYNC_SLICING_EXAMPLE_SCREENSHOT'


def screenshot_path() -> str | None:
    if '--screenshot' in sys.argv:
        return sys.argv[sys.argv.index('--screenshot') + 1]
    return os.environ.get(ENV) or None


def show(viewer: napari.Viewer, steps: list[int] | None = None, axis: int = 0) -> None:
    """Run the viewer, or (headless) step ``axis`` through ``steps``, screenshot and close."""
    path = screenshot_path()
    if path is None:
        napari.run()
        return
    with viewer.sync_slicing():
        for step in steps or []:
            current = list(viewer.dims.current_step)
            current[axis] = step
            viewer.dims.current_step = tuple(current)
        viewer.screenshot(path, canvas_only=True)
    viewer.close()
