"""The main thread's side: responses reach napari here, and only here.

Workers hand over what they finished (:meth:`Applier.deliver`); the main thread drains it in one
posted call. A drain shows each layer's newest response only (one texture upload, not one per
response that finished while the main thread was busy), and only if it is newer than what the
layer shows and no synchronous slice happened since it was requested: never an older plane
after a newer one. With a frame clock (a shown viewer), a layer is shown at most once per
displayed frame: a newer response waits for the frame (and replaces any still waiting), so the
main thread never uploads a plane nobody sees. A layer's thumbnail is redrawn at most every
``THUMBNAIL_INTERVAL_S``: a plane shown sooner gets its thumbnail that much later (if it is still
shown then), or at once when someone waits for slicing to finish (``flush``). A preview (a coarse first look) is shown only while its request is the
layer's newest and nothing of it is shown yet. A failed newest request leaves "loading" and
becomes a rate-limited notification.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from napari_async_slicing import _napari_compat as compat
from napari_async_slicing.components._stats import Recorder
from napari_async_slicing.components._task import Dropped, Finished, Outcome
from napari_async_slicing.layers import _slice

logger = logging.getLogger(__name__)

#: While planes keep coming, a layer's thumbnail is updated at most this often (and once more,
#: this long after the last update, for the plane shown then).
THUMBNAIL_INTERVAL_S = 0.25


class FailureNotifier:
    """At most one notification per layer per ``interval`` seconds, counting the rest.

    A notification is the message only (napari would format an exception's traceback, locals
    included, on the main thread: a second or more for a deep read); the traceback goes to
    ``logging`` at debug level from the worker that met it.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last: dict[int, float] = {}
        self._suppressed: dict[int, int] = {}

    def report(self, key: int, message: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -float('inf')) < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        suppressed = self._suppressed.pop(key, 0)
        self._last[key] = now
        if suppressed:
            message = f'{message} ({suppressed} similar failures not shown)'
        compat.notify_error(message)
        return True


@dataclass
class _Shown:
    """What a layer shows: the request its response answered, whether that is a preview (its
    final may still replace it; nothing older may), and the plane."""

    request_id: int = -1
    preview: bool = False
    plane: tuple = ()


class Applier:
    """See the module docstring.

    ``epoch_of(layer)`` and ``is_newest(task)`` come from the scheduler; ``rested(layers)`` is
    told which layers show their newest lazily read plane after a drain that left nothing
    visible in flight (``idle()``).
    """

    def __init__(
        self,
        recorder: Recorder,
        epoch_of: Callable[[Any], int | None],
        is_newest: Callable[[Any], bool],
        idle: Callable[[], bool],
        rested: Callable[[list[Any]], None],
    ) -> None:
        self._recorder = recorder
        self._epoch_of = epoch_of
        self._is_newest = is_newest
        self._idle = idle
        self._rested = rested
        self._lock = threading.Lock()
        self._done: deque[Finished] = deque()
        self._drain_posted = False
        self._shown: weakref.WeakKeyDictionary[Any, _Shown] = weakref.WeakKeyDictionary()
        self._at_rest: list[Any] = []
        self._notifier = FailureNotifier()
        self._closed = False
        #: The frame each layer was last shown in, and its thumbnail: when last updated, and the
        #: response whose thumbnail is still to come.
        self._shown_in_frame: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._thumbnail_at: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._thumbnail_due: weakref.WeakKeyDictionary[Any, Finished] = weakref.WeakKeyDictionary()
        #: Runs a callable on the main thread (Qt: posted); None: no main thread to post to (a
        #: bare ``ViewerModel``), results are applied where they finish, as napari's slicer does.
        #: It may also tell the frame shown (``frame()``), run a callable once the next frame is
        #: shown (``after_frame(fn)``) and later (``call_later(seconds, fn)``).
        self.call_on_main: Any = None

    def deliver(self, finished: Finished) -> None:
        """Any thread: ``finished`` is to be shown (or recorded) on the main thread."""
        with self._lock:
            self._done.append(finished)
            call = self.call_on_main
            if call is not None:
                if self._drain_posted:
                    return
                self._drain_posted = True
        if call is None:
            self.drain()
        else:
            call(self.drain)

    def drain(self, paced: bool = True) -> None:
        """Main thread: show what finished (each layer's newest only; with ``paced``, a layer
        already shown in the current frame waits for the next one)."""
        with self._lock:
            self._drain_posted = False
            items = list(self._done)
            self._done.clear()
        newest: dict[int, int] = {}
        for item in items:
            if not item.preview and item.error is None:
                key = id(item.task.layer)
                newest[key] = max(newest.get(key, 0), item.task.request_id)
        waiting = []
        for item in items:
            newer = newest.get(id(item.task.layer), 0)
            skip = item.task.request_id < newer if not item.preview else item.task.request_id <= newer
            if item.preview and skip:
                continue
            if not skip and paced and item.error is None and self._shown_this_frame(item):
                waiting.append(item)  # its layer was shown in this frame already
                continue
            self.apply(item, skip=skip)
        if waiting:
            with self._lock:
                self._done.extendleft(reversed(waiting))
            self.call_on_main.after_frame(self._drain_soon)
        if self._at_rest and self._idle():
            layers, self._at_rest = self._at_rest, []
            self._rested(layers)

    def _drain_soon(self) -> None:
        with self._lock:
            if self._drain_posted or not self._done:
                return
            self._drain_posted = True
        self.call_on_main(self.drain)

    def _shown_this_frame(self, item: Finished) -> bool:
        frame = getattr(self.call_on_main, 'frame', None)
        layer = item.task.layer
        return frame is not None and layer is not None and self._shown_in_frame.get(layer) == frame()

    def _show(self, layer: Any, item: Finished) -> None:
        """Hand ``item``'s response to the layer (its thumbnail if due, else a little later)."""
        frame = getattr(self.call_on_main, 'frame', None)
        later = getattr(self.call_on_main, 'call_later', None)
        now = time.monotonic()
        wait = THUMBNAIL_INTERVAL_S - (now - self._thumbnail_at.get(layer, -float('inf')))
        thumbnail = later is None or wait <= 0
        _slice.apply(layer, item.response, thumbnail=thumbnail)
        if frame is not None:
            self._shown_in_frame[layer] = frame()
        if thumbnail:
            self._thumbnail_at[layer] = now
            self._thumbnail_due.pop(layer, None)
            return
        assert later is not None
        if layer not in self._thumbnail_due:
            later(wait, lambda ref=weakref.ref(layer): self._late_thumbnail(ref))
        self._thumbnail_due[layer] = item

    def flush(self) -> None:
        """Main thread: show everything that finished, and the thumbnails still to come."""
        self.drain(paced=False)
        for layer in list(self._thumbnail_due.keys()):
            self._late_thumbnail(weakref.ref(layer))

    def _late_thumbnail(self, layer_ref: weakref.ReferenceType) -> None:
        layer = layer_ref()
        item = self._thumbnail_due.pop(layer, None) if layer is not None else None
        shown = self._shown.get(layer) if layer is not None else None
        if item is None or shown is None or self._closed or shown.request_id != item.task.request_id:
            return  # gone, or its thumbnail came with a newer plane
        if item.task.epoch != self._epoch_of(layer):
            return  # napari's synchronous slicing showed a plane (and its thumbnail) since
        self._thumbnail_at[layer] = time.monotonic()
        _slice.update_thumbnail(layer, item.response)

    def apply(self, item: Finished, skip: bool = False) -> None:
        """Show ``item`` (unless ``skip``: then only its outcome is recorded). If showing raises,
        say so: one layer's apply must not strand the others, nor raise out of the dims setter
        that submitted it (inline slices)."""
        try:
            if item.preview:
                self._apply_preview(item)
            else:
                self._apply(item, skip)
        except Exception as exc:  # noqa: BLE001
            self._apply_failed(item, exc)

    def forget(self, layer: Any) -> None:
        self._shown.pop(layer, None)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            self._done.clear()
        close = getattr(self.call_on_main, 'close', None)
        if close is not None:
            close()

    # --- one response -------------------------------------------------------------------------

    def _apply(self, item: Finished, skip: bool) -> None:
        task = item.task
        layer = task.layer
        epoch = self._epoch_of(layer) if layer is not None and not self._closed else None
        if epoch is None:
            return
        shown = self._shown.setdefault(layer, _Shown())
        if isinstance(item.error, Dropped):
            outcome = Outcome.DROPPED
        elif item.cancelled:
            outcome = Outcome.CANCELLED  # superseded; the newer request owns the loading state
        elif item.error is not None:
            outcome = Outcome.FAILED
            compat.mark_loaded(layer, task.request_id)
            if self._is_newest(task):
                self._report(layer, task, item.error)
        elif (
            not skip
            and task.epoch == epoch
            and (
                task.request_id > shown.request_id or (task.request_id == shown.request_id and shown.preview)
            )
        ):
            outcome = Outcome.APPLIED
            shown.request_id, shown.preview, shown.plane = task.request_id, False, task.plane
            self._show(layer, item)
            compat.mark_loaded(layer, task.request_id)
            if not task.heavy and not _slice.in_memory(task.request) and layer not in self._at_rest:
                self._at_rest.append(layer)
        else:
            outcome = Outcome.STALE
            compat.mark_loaded(layer, task.request_id)
        self._recorder.record(item, layer, outcome)

    def _apply_preview(self, item: Finished) -> None:
        """Show a partial response if its task is still the layer's newest and not yet shown."""
        task = item.task
        layer = task.layer
        if layer is None or self._closed or task.token.cancelled:
            return  # gone or superseded
        shown = self._shown.setdefault(layer, _Shown())
        if not self._is_newest(task) or task.request_id <= shown.request_id or task.plane == shown.plane:
            # Superseded, its final is already shown, or the layer already shows this plane
            # (at a level at least as fine: another data level was asked for, e.g. by a zoom).
            return
        shown.request_id, shown.preview, shown.plane = task.request_id, True, task.plane
        self._show(layer, item)
        self._recorder.record(item, layer, Outcome.PREVIEW)

    def _apply_failed(self, item: Finished, error: BaseException) -> None:
        """Showing a response raised (in napari's apply or ours): say so, leave "loading"."""
        if item.preview:  # a preview is a bonus: its final still comes
            logger.debug('showing a preview failed', exc_info=error)
            return
        layer = item.task.layer
        if layer is None:
            return
        logger.debug('showing a response failed', exc_info=error)
        compat.mark_loaded(layer, item.task.request_id)
        self._report(layer, item.task, error)

    def _report(self, layer: Any, task: Any, error: BaseException) -> None:
        name = getattr(layer, 'name', type(layer).__name__)
        where = f' at step {task.step}' if task.step else ''
        message = f"Could not load layer '{name}'{where}: {type(error).__name__}: {error}"
        self._notifier.report(id(layer), message)
