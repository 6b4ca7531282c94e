"""The slicer's way to the Qt main thread: posted calls, timers, and the frames a canvas shows."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QCoreApplication, QEvent, QObject, Qt, QThread, QTimerEvent

_CALL = QEvent.Type(QEvent.registerEventType())
#: ``postEvent``'s priority as the int every binding takes (PyQt6 refuses its enum there).
_NORMAL_PRIORITY = int(
    getattr(Qt.EventPriority.NormalEventPriority, 'value', Qt.EventPriority.NormalEventPriority)
)
#: If the canvas shows no frame this long (minimised, not painted), a frame is counted anyway and
#: ``after_frame`` callbacks run: what is paced by frames keeps going at this interval.
FRAME_FALLBACK_S = 0.1


class _CallEvent(QEvent):
    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(_CALL)
        self.fn = fn


class MainThreadCaller(QObject):
    """``caller(fn)`` runs ``fn()`` on the main thread: now if already there, else posted (at
    normal priority: input events and repaints are not held back by a stream of slices).

    With ``canvas`` (a ``QOpenGLWidget``) it also counts the frames the canvas shows
    (``frame()``) and runs callables once the next one is shown (``after_frame``). Its timers
    are its own and stop with :meth:`close`.
    """

    def __init__(self, canvas: Any = None) -> None:
        super().__init__()
        app = QCoreApplication.instance()
        if app is not None and self.thread() is not app.thread():
            self.moveToThread(app.thread())
        self._frames = 0
        self._after: list[Callable[[], Any]] = []
        self._later: list[tuple[float, Callable[[], Any]]] = []
        #: This object's own Qt timers (``startTimer``): the frame fallback, the next ``call_later``.
        self._frame_timer = 0
        self._later_timer = 0
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

    def post(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the main thread once the current event is handled (always posted)."""
        QCoreApplication.postEvent(self, _CallEvent(fn), _NORMAL_PRIORITY)

    def frame(self) -> int:
        """How many frames the canvas has shown (a fallback with none shown counts as one)."""
        return self._frames

    def after_frame(self, fn: Callable[[], Any]) -> None:
        """Main thread: run ``fn`` once the canvas has shown its next frame (or after
        ``FRAME_FALLBACK_S`` if it shows none, which then counts as a frame: minimised)."""
        if not self._after:
            self._frame_timer = self._restart(self._frame_timer, FRAME_FALLBACK_S)
        self._after.append(fn)

    def call_later(self, seconds: float, fn: Callable[[], Any]) -> None:
        """Main thread: run ``fn`` in ``seconds``."""
        self._later.append((time.monotonic() + seconds, fn))
        self._arm_later()

    def close(self) -> None:
        """Nothing more runs later (the slicer shut down)."""
        self._after.clear()
        self._later.clear()
        self._frame_timer = self._restart(self._frame_timer, None)
        self._later_timer = self._restart(self._later_timer, None)

    def _frame_shown(self) -> None:
        """Qt says so from inside the window's paint event: what waited for this frame runs once
        that event is handled (posted), not as part of the paint."""
        self._frames += 1
        if self._after:
            after = self._take_after()
            self.post(lambda: self._run(after))

    def _run_after(self) -> None:
        self._run(self._take_after())

    def _take_after(self) -> list[Callable[[], Any]]:
        """What waits for the next frame (no fallback timer for it any more)."""
        self._frame_timer = self._restart(self._frame_timer, None)
        after, self._after = self._after, []
        return after

    @staticmethod
    def _run(callbacks: list[Callable[[], Any]]) -> None:
        for fn in callbacks:
            fn()

    def _run_later(self) -> None:
        now = time.monotonic()
        due = [fn for at, fn in self._later if at <= now]
        self._later = [(at, fn) for at, fn in self._later if at > now]
        for fn in due:
            fn()
        self._arm_later()

    def _arm_later(self) -> None:
        wait = min(at for at, _ in self._later) - time.monotonic() if self._later else None
        self._later_timer = self._restart(self._later_timer, wait)

    def _restart(self, timer_id: int, seconds: float | None) -> int:
        """Stop timer ``timer_id`` (0: none); start one for ``seconds`` unless None."""
        if timer_id:
            self.killTimer(timer_id)
        return 0 if seconds is None else self.startTimer(max(0, int(seconds * 1000) + 1))

    def timerEvent(self, event: QTimerEvent | None) -> None:
        timer_id = event.timerId() if event is not None else 0
        if timer_id == self._frame_timer:
            self._frames += 1  # no frame shown: without this, a layer shown in the last frame waits forever
            self._run_after()
        elif timer_id == self._later_timer:
            self._later_timer = self._restart(self._later_timer, None)
            self._run_later()
        else:
            self.killTimer(timer_id)

    def event(self, event: QEvent | None) -> bool:
        if isinstance(event, _CallEvent):
            event.fn()
            return True
        return super().event(event)
