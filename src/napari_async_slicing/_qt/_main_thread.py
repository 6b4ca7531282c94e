"""Run a callable on the Qt main thread (a tiny high-priority posted-event invoker)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QCoreApplication, QEvent, QObject, Qt, QThread

_CALL = QEvent.Type(QEvent.registerEventType())
#: ``postEvent``'s priority as the int every binding takes (PyQt6 refuses its enum there).
_HIGH_PRIORITY = int(getattr(Qt.EventPriority.HighEventPriority, 'value', Qt.EventPriority.HighEventPriority))


class _CallEvent(QEvent):
    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(_CALL)
        self.fn = fn


class MainThreadCaller(QObject):
    """``caller(fn)`` runs ``fn()`` on the main thread: now if already there, else posted.

    The event is posted at high priority so a ready slice is applied before pending repaints
    and other queued work, not behind them.
    """

    def __init__(self) -> None:
        super().__init__()
        app = QCoreApplication.instance()
        if app is not None and self.thread() is not app.thread():
            self.moveToThread(app.thread())

    def __call__(self, fn: Callable[[], Any]) -> None:
        if QThread.currentThread() is self.thread():
            fn()
        else:
            QCoreApplication.postEvent(self, _CallEvent(fn), _HIGH_PRIORITY)

    def event(self, event: QEvent | None) -> bool:
        if isinstance(event, _CallEvent):
            event.fn()
            return True
        return super().event(event)
