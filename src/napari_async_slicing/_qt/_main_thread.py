"""Run a callable on the Qt main thread (a tiny queued-signal invoker)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QCoreApplication, QObject, Qt, QThread, Signal


class MainThreadCaller(QObject):
    """``caller(fn)`` runs ``fn()`` on the main thread: now if already there, else queued."""

    _call = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        app = QCoreApplication.instance()
        if app is not None and self.thread() is not app.thread():
            self.moveToThread(app.thread())
        self._call.connect(self._run, Qt.ConnectionType.QueuedConnection)

    def __call__(self, fn: Callable[[], Any]) -> None:
        if QThread.currentThread() is self.thread():
            fn()
        else:
            self._call.emit(fn)

    def _run(self, fn: Callable[[], Any]) -> None:
        fn()
