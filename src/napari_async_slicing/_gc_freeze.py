"""Python's cyclic garbage collector while viewers use our slicer (option ``freeze_gc``).

A full collection (generation 2) walks every object the collector tracks: with napari, Qt and
a few layers that is a few hundred thousand objects, and the thread that triggers it holds the
GIL throughout, so the main thread stalls for as long whichever thread it runs on. Reads make
many objects that live a little while (tasks, futures, buffers, dask graphs); each outlives the
young collections and counts towards the next full one, so during a drag over remote data full
collections come every few seconds, each a stall of several frames.

When the viewer is at rest (every layer shows its newest plane, nothing of theirs in flight), a
slicer collects once and then freezes (``gc.freeze``): what is alive moves to the permanent
generation, which collections skip, so later full collections walk only what was made since.
What becomes garbage while frozen is not collected. So removing a layer or shutting a slicer
down (closing a viewer, a live swap, ``disable()``) thaws (``gc.unfreeze``: all of it back in
the oldest generation, collected as before), and the next rest freezes again. Between a freeze
and a thaw, cyclic garbage of objects alive at the freeze waits for the thaw: at most what was
alive then.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from typing import Any

_lock = threading.Lock()
#: Bumped by every thaw: a slicer that froze before it freezes again at its next rest.
_thaws = 0
#: Whether objects are frozen by a slicer now.
_frozen = False


def thaw() -> None:
    """Move what was frozen back into the collector's oldest generation (any thread)."""
    global _thaws, _frozen
    with _lock:
        _thaws += 1
        if _frozen:
            _frozen = False
            gc.unfreeze()


def frozen() -> bool:
    """Whether a slicer has frozen the collector's objects (and no thaw came since)."""
    return _frozen


class Freezer:
    """One slicer's part: freeze at its viewer's rests, once per thaw.

    ``idle()`` says whether the slicer has nothing in flight (checked again when the freeze
    runs, after the frame that shows the plane the viewer rests on).
    """

    def __init__(self, enabled: bool, idle: Callable[[], bool]) -> None:
        self.enabled = enabled
        self._idle = idle
        self._frozen_at: int | None = None
        self._pending = False
        self._closed = False

    def wanted(self) -> bool:
        """Whether a freeze is due: never frozen by this slicer, or thawed since."""
        return self.enabled and not self._closed and self._frozen_at != _thaws and gc.isenabled()

    def rested(self, call_on_main: Any) -> None:
        """Main thread, the viewer at rest: freeze after its next frame (not before it: the
        collection must not hold back the plane it rests on)."""
        after_frame = getattr(call_on_main, 'after_frame', None)
        if after_frame is None or self._pending or not self.wanted():
            return
        self._pending = True
        after_frame(self._freeze)

    def _freeze(self) -> None:
        global _frozen
        self._pending = False
        if not self.wanted() or not self._idle():
            return  # closed, frozen since, or a new step came: the next rest
        gc.collect()
        with _lock:
            gc.freeze()
            _frozen = True
            self._frozen_at = _thaws

    def close(self) -> None:
        """The slicer shut down: no more freezes, and what it froze is collected again."""
        self._closed = True
        thaw()
