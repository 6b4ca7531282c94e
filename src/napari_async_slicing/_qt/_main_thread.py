"""The slicer's way to the Qt main thread: posted calls, timers, and the frames a canvas shows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QCoreApplication, QEvent, QObject, Qt, QThread

_CALL = QEvent.Type(QEvent.registerEventType())
#: ``postEvent``'s priority as the int every binding takes (PyQt6 refuses its enum there).
_NORMAL_PRIORITY = int(
    getattr(Qt.EventPriority.NormalEventPriority, 'value', Qt.EventPriority.NormalEventPriority)
)
#: If the canvas shows no frame this long (hidden, minimised), ``after_frame`` callbacks run anyway.
FRAME_FALLBACK_S = 0.1


class _CallEvent(QEvent):
    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(_CALL)
        self.fn = fn


class MainThreadCaller(QObject):
    """``caller(fn)`` runs ``fn()`` on the main thread: now if already there, else posted (at
    normal priority: input events and repaints are not held back by a stream of slices).

    With ``canvas`` (a ``QOpenGLWidget``) it also counts the frames the canvas shows
    (``frame()``) and runs callables once the next one is shown (``after_frame``).
    """

    def __init__(self, canvas: Any = None) -> None:
        super().__init__()
        app = QCoreApplication.instance()
        if app is not None and self.thread() is not app.thread():
            self.moveToThread(app.thread())
        self._frames = 0
        self._after: list[Callable[[], Any]] = []
        #: Timers of this object not fired yet, by id, with what they run (``call_later``).
        self._timers: dict[int, Callable[[], Any]] = {}
        signal = getattr(canvas, 'frameSwapped', None)
        if signal is not None:
            signal.connect(self._frame_shown)
        else:
            self.frame = None  # type: ignore[method-assign,assignment]  # no frames to count

    def __call__(self, fn: Callable[[], Any]) -> None:
        if QThread.currentThread() is self.thread():
            fn()
        else:
            QCoreApplication.postEvent(self, _CallEvent(fn), _NORMAL_PRIORITY)

    def frame(self) -> int:
        """How many frames the canvas has shown."""
        return self._frames

    def after_frame(self, fn: Callable[[], Any]) -> None:
        """Main thread: run ``fn`` once the canvas has shown its next frame."""
        if not self._after:
            self.call_later(FRAME_FALLBACK_S, self._run_after)
        self._after.append(fn)

    def call_later(self, seconds: float, fn: Callable[[], Any]) -> None:
        """Main thread: run ``fn`` in ``seconds`` (unless ``cancel_pending`` is called first).

        A timer of this object (``startTimer``), not a ``QTimer``: it goes with the object, and
        ``cancel_pending`` (the slicer's shutdown) kills it.
        """
        self._timers[self.startTimer(max(0, int(seconds * 1000)))] = fn

    def timerEvent(self, event: Any) -> None:
        timer_id = event.timerId()
        self.killTimer(timer_id)
        fn = self._timers.pop(timer_id, None)
        if fn is not None:
            fn()

    def cancel_pending(self) -> None:
        """Kill every timer not fired yet (the slicer shut down: nothing is left to run)."""
        if QThread.currentThread() is not self.thread():
            self(self.cancel_pending)
            return
        timers, self._timers = self._timers, {}
        for timer_id in timers:
            self.killTimer(timer_id)
        self._after.clear()

    def _frame_shown(self) -> None:
        self._frames += 1
        self._run_after()

    def _run_after(self) -> None:
        after, self._after = self._after, []
        for fn in after:
            fn()

    def event(self, event: QEvent | None) -> bool:
        if isinstance(event, _CallEvent):
            event.fn()
            return True
        return super().event(event)
