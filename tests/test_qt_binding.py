"""The Qt binding: qtpy, napari and vispy all run the one ``QT_API`` names (PyQt5 or PyQt6), and
what we post to Qt works under it."""

from __future__ import annotations

import importlib
import os
import sys
import threading

import pytest
import qtpy

from napari_async_slicing._napari_compat import canvas_widget_of
from napari_async_slicing._qt._main_thread import MainThreadCaller


@pytest.mark.skipif(not os.environ.get('QT_API'), reason='QT_API not set: qtpy picks the binding')
def test_qtpy_napari_and_vispy_run_the_binding_qt_api_names(make_napari_viewer):
    wanted = {'pyqt5': 'PyQt5', 'pyqt6': 'PyQt6', 'pyside2': 'PySide2', 'pyside6': 'PySide6'}
    binding = wanted[os.environ['QT_API'].lower()]
    assert qtpy.API_NAME == binding
    viewer = make_napari_viewer(show=True)
    from vispy.app import use_app

    assert use_app().backend_name == binding
    widgets = importlib.import_module(f'{binding}.QtWidgets')
    assert isinstance(canvas_widget_of(viewer), widgets.QWidget)  # napari's canvas is of it
    others = [name for name in wanted.values() if name != binding and f'{name}.QtCore' in sys.modules]
    assert not others, f'{others} imported beside {binding}'


def test_a_call_from_a_worker_thread_runs_on_the_main_thread(qapp, qtbot):
    caller = MainThreadCaller()
    ran: list[str] = []
    worker = threading.Thread(target=caller, args=(lambda: ran.append(threading.current_thread().name),))
    worker.start()
    worker.join(5)
    qtbot.waitUntil(lambda: bool(ran), timeout=2000)
    assert ran == [threading.main_thread().name]
