"""The Qt binding: napari and vispy run the one qtpy picked (PyQt5, or PyQt6 with ``QT_API=pyqt6``),
and what we post to Qt works under it."""

from __future__ import annotations

import importlib
import sys
import threading

import qtpy

from napari_async_slicing._napari_compat import canvas_widget_of
from napari_async_slicing._qt._main_thread import MainThreadCaller

BINDINGS = ('PyQt5', 'PyQt6', 'PySide2', 'PySide6')


def test_napari_and_vispy_run_qtpys_binding_and_no_other(make_napari_viewer):
    """(That qtpy's binding is the one ``QT_API`` asked for is checked before the run, by
    ``scripts/versions.py``: qtpy overwrites ``QT_API`` with what it picked.)"""
    binding = qtpy.API_NAME
    viewer = make_napari_viewer(show=True)
    from vispy.app import use_app

    assert use_app().backend_name == binding
    widgets = importlib.import_module(f'{binding}.QtWidgets')
    assert isinstance(canvas_widget_of(viewer), widgets.QWidget)  # napari's canvas is of it
    others = [name for name in BINDINGS if name != binding and f'{name}.QtCore' in sys.modules]
    assert not others, f'{others} imported beside {binding}'


def test_a_call_from_a_worker_thread_runs_on_the_main_thread(qapp, qtbot):
    caller = MainThreadCaller()
    ran: list[str] = []
    worker = threading.Thread(target=caller, args=(lambda: ran.append(threading.current_thread().name),))
    worker.start()
    worker.join(5)
    qtbot.waitUntil(lambda: bool(ran), timeout=2000)
    assert ran == [threading.main_thread().name]


def test_what_waits_for_a_frame_runs_after_the_paint_that_showed_it(qapp, qtbot):
    """Qt emits ``frameSwapped`` inside the window's paint event: callbacks waiting for the frame
    run after that event (posted), not inside it; one registered after the frame waits for the next."""
    caller = MainThreadCaller()
    ran: list[str] = []
    caller.after_frame(lambda: ran.append('first'))
    caller._frame_shown()  # as the canvas's frameSwapped does, inside a paint
    assert ran == []
    caller.after_frame(lambda: ran.append('second'))
    qtbot.waitUntil(lambda: ran == ['first'], timeout=2000)
    caller._frame_shown()
    qtbot.waitUntil(lambda: ran == ['first', 'second'], timeout=2000)
    caller.close()


def test_a_canvas_that_shows_no_frame_still_counts_one_after_the_fallback(qapp, qtbot):
    """Minimised, a window paints nothing: what waits for a frame runs after the fallback, and that
    counts as a frame, so whatever is paced per frame (a layer shown once a frame) goes on."""
    caller = MainThreadCaller()
    caller.frame = lambda: caller._frames  # as with a canvas: frames are counted
    ran: list[int] = []
    caller.after_frame(lambda: ran.append(caller.frame()))
    qtbot.waitUntil(lambda: bool(ran), timeout=2000)
    assert ran == [1]
    caller.close()
