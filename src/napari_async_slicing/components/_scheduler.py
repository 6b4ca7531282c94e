"""Per-layer scheduling: latest wins, coalescing, finish-on-the-way, inline fast slices, tiers.

Layers never wait on each other. For one layer the newest request starts at once; the one it
supersedes is dropped (not started) or cancelled (its reads stop), unless it is far enough
through its read (``FINISH_FRACTION`` of the layer's usual read time) and no other older request
is finishing: then it finishes and is shown on the way if still newer than what is shown. So a
layer never has more than two requests running. 2D requests run on the interactive workers,
3D ones on their own slots so a volume never starves a plane. Fast in-memory slices run inline on
the main thread (NAP-4: "if we can infer slicing will be fast, skip the delay").
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from napari_async_slicing import _napari_compat as compat
from napari_async_slicing._options import SlicingOptions
from napari_async_slicing.components._task import Finished, SliceTask, dropped
from napari_async_slicing.layers import _slice

#: A superseded read keeps going if it is at least this far through the layer's usual read time
#: (0.25: at 40 ms steps over a 100 ms source about every other plane is shown on the way).
FINISH_FRACTION = 0.25

#: In-memory requests measured below this run inline on the main thread. Well under a frame.
INLINE_BUDGET_S = 0.004


@dataclass(eq=False)
class Lane:
    """One layer's requests (main thread, and the scheduler's lock for what workers touch)."""

    #: The newest request's task (queued or running), and an older one allowed to finish.
    current: SliceTask | None = None
    finishing: SliceTask | None = None
    latest_id: int = -1
    #: Bumped by synchronous slicing: responses requested before it are never applied.
    epoch: int = 0
    #: When running tasks started (worker threads write, under the lock).
    started: dict[SliceTask, float] = field(default_factory=dict)
    #: Moving average of the layer's compute time (s), and the kind of slice it holds for.
    compute_s: float | None = None
    compute_kind: tuple | None = None
    #: The last request built, and what it was built for (coalescing napari's second submit).
    last: tuple[Any, SliceTask] | None = None


class Scheduler:
    """See the module docstring.

    ``execute(task) -> Finished`` runs a request (on a worker, or inline); ``deliver(finished)``
    hands the result to the main thread; ``apply_now(finished)`` shows an inline result;
    ``cached_first(task)`` may show a lazy request from the chunk cache before its worker does
    (asked for a step at rest: nothing of the layer's was queued or running).
    """

    def __init__(
        self,
        options: SlicingOptions,
        execute: Callable[[SliceTask], Finished],
        deliver: Callable[[Finished], None],
        apply_now: Callable[[Finished], None],
        done: Callable[[Finished], None],
        cached_first: Callable[[SliceTask], None] | None = None,
    ) -> None:
        self._execute = execute
        self._cached_first = cached_first
        self._deliver = deliver
        self._apply_now = apply_now
        self._done = done
        self._interactive = ThreadPoolExecutor(options.workers, thread_name_prefix='napari-async-slicing')
        self._heavy = ThreadPoolExecutor(options.heavy_slots, thread_name_prefix='napari-async-slicing-heavy')
        self._lock = threading.RLock()
        self._lanes: weakref.WeakKeyDictionary[Any, Lane] = weakref.WeakKeyDictionary()
        #: Tasks queued or running (``wait_until_idle`` waits for them).
        self._in_flight: set[SliceTask] = set()
        self._defer_depth = 0
        self._deferred: list[SliceTask] = []
        self._main_thread = threading.main_thread()
        self._shut_down = False

    # --- lanes ---------------------------------------------------------------------------------

    def lane(self, layer: Any) -> Lane:
        lane = self._lanes.get(layer)
        if lane is None:
            lane = self._lanes[layer] = Lane()
        return lane

    def layers(self) -> list[Any]:
        return list(self._lanes.keys())

    def is_newest(self, task: SliceTask) -> bool:
        """Whether ``task`` is its layer's newest request, with no synchronous slice since."""
        lane = self._lanes.get(task.layer)
        return lane is not None and task.request_id == lane.latest_id and task.epoch == lane.epoch

    def epoch(self, layer: Any) -> int | None:
        lane = self._lanes.get(layer)
        return None if lane is None else lane.epoch

    def idle(self, layer: Any) -> bool:
        """Whether ``layer`` has been sliced and nothing of it is queued or running now."""
        lane = self._lanes.get(layer)
        return (
            lane is not None and lane.latest_id >= 0 and (lane.current is None or lane.current.future.done())
        )

    def in_flight(self) -> list[SliceTask]:
        with self._lock:
            return list(self._in_flight)

    # --- scheduling (main thread) --------------------------------------------------------------

    def coalesced(self, layer: Any, key: Any) -> SliceTask | None:
        """The task already answering a request for ``key`` (napari submits every step twice:
        ``dims.events.point``, then ``current_step``), if it is neither stopped nor failed."""
        lane = self._lanes.get(layer)
        if lane is None or lane.last is None or lane.last[0] != key:
            return None
        last = lane.last
        task = last[1]
        if task.token.cancelled or task.epoch != lane.epoch:
            return None
        if task.future.done() and not task.future.cancelled() and task.future.exception() is not None:
            return None
        return task

    def schedule(self, task: SliceTask, key: Any) -> SliceTask:
        """Queue ``task`` for its layer: run it inline if it is a fast in-memory slice, else start
        it on a worker (after the ``deferred`` block, if inside one)."""
        layer = task.layer
        lane = self.lane(layer)
        lane.last = (key, task)
        if self._runs_inline(lane, task):
            self._run_inline(lane, task)
            return task
        if self._cached_first is not None and not task.heavy and self.idle(layer):
            self._cached_first(task)
        compat.mark_unloaded(layer, task.request_id)
        with self._lock:
            self._in_flight.add(task)
            lane.latest_id = task.request_id
            old = lane.current
            if old is not None:
                if lane.finishing is None and self._nearly_done(lane, old):
                    lane.finishing = old  # shown on the way, if still newer than what is shown
                else:
                    self._stop(old)
            lane.current = task
            if self._defer_depth:
                self._deferred.append(task)
            else:
                self._start(task)
        return task

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Queue requests submitted inside the block; start only those not superseded at its end.

        Used while napari adds a layer: it slices the new layer at the current dims and then moves
        dims to the centre, so without this the first read would be for a plane nobody sees.
        """
        self._defer_depth += 1
        try:
            yield
        finally:
            self._defer_depth -= 1
            if not self._defer_depth:
                self.start_deferred()

    def start_deferred(self) -> None:
        with self._lock:
            tasks, self._deferred = self._deferred, []
            for task in tasks:
                if not task.future.cancelled():  # superseded ones were dropped unstarted
                    self._start(task)

    def slice_sync(self, layer: Any, dims: Any, force: bool) -> None:
        """napari's synchronous path; in-flight responses for the layer become stale."""
        lane = self._lanes.get(layer)
        if lane is not None:
            with self._lock:
                lane.epoch += 1
                lane.last = None
                self._supersede_all(lane)
        compat.slice_dims_sync(layer, dims, force)
        if lane is not None:
            compat.mark_loaded(layer, lane.latest_id)

    def forget(self, layer: Any) -> int | None:
        """Stop the layer's requests and forget it; its newest request id (None if unknown)."""
        with self._lock:
            lane = self._lanes.pop(layer, None)
            if lane is None:
                return None
            self._supersede_all(lane)
        return lane.latest_id

    def wait(self, timeout: float | None) -> None:
        """Wait until no task is queued or running (``TimeoutError`` after ``timeout``)."""
        self.start_deferred()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            futures = [t.future for t in self.in_flight()]
            if not futures:
                return
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            _, not_done = wait(futures, timeout=remaining)
            if not_done:
                raise TimeoutError(
                    f'Slicing {len(not_done)} tasks did not complete within timeout ({timeout}s).'
                )

    def shutdown(self) -> list[tuple[Any, int]]:
        """Stop everything; each layer known with its newest request id."""
        self._shut_down = True
        with self._lock:
            lanes = list(self._lanes.items())
            for _, lane in lanes:
                self._supersede_all(lane)
        for pool in self.pools():  # all at once: the wait is the slowest thread's, not the sum
            pool.shutdown(wait=False, cancel_futures=True)
        for pool in self.pools():
            pool.shutdown(wait=True)
        with self._lock:
            for task in list(self._in_flight):  # queued in an executor that never ran them
                self._drop(task)
        return [(layer, lane.latest_id) for layer, lane in lanes]

    def pools(self) -> tuple[ThreadPoolExecutor, ...]:
        return (self._interactive, self._heavy)

    def submit_beside(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn`` on an interactive worker (work a running request does beside its own)."""
        return self._interactive.submit(fn, *args)

    # --- policy --------------------------------------------------------------------------------

    def _runs_inline(self, lane: Lane, task: SliceTask) -> bool:
        """Fast in-memory slices skip the thread hop: measured cheap on this kind of slice, or,
        not yet measured on it (a new layer, new data, order or ndisplay), small. Lazy data never."""
        if threading.current_thread() is not self._main_thread or not _slice.in_memory(task.request):
            return False
        if lane.compute_s is not None and lane.compute_kind == _slice.slice_kind(task.request):
            return lane.compute_s <= INLINE_BUDGET_S
        size = _slice.work_bytes(task.request)
        return size is not None and size <= _slice.FAST_SLICE_BYTES

    def _nearly_done(self, lane: Lane, task: SliceTask) -> bool:
        started = lane.started.get(task)
        if started is None or lane.compute_s is None:
            return False
        return time.perf_counter() - started >= FINISH_FRACTION * lane.compute_s

    def _stop(self, task: SliceTask) -> None:
        """Supersede a task: drop it if it never started, else cancel its reads."""
        if not self._drop(task):
            task.token.cancel()

    def _supersede_all(self, lane: Lane) -> None:
        for task in (lane.current, lane.finishing):
            if task is not None:
                self._stop(task)
        lane.current = lane.finishing = None

    def _drop(self, task: SliceTask) -> bool:
        """Cancel a task that has not started; False if it already has."""
        if not task.future.cancel():
            return False
        self._in_flight.discard(task)
        self._deliver(dropped(task))
        return True

    def _start(self, task: SliceTask) -> None:
        executor = self._heavy if task.heavy else self._interactive
        try:
            executor.submit(self._run, task)
        except RuntimeError:  # shut down
            self._drop(task)

    def _run_inline(self, lane: Lane, task: SliceTask) -> None:
        """Slice on the main thread now; anything older for the layer becomes stale."""
        with self._lock:
            lane.latest_id = task.request_id
            self._supersede_all(lane)
        compat.set_newest_slice_id(task.layer, task.request_id)  # no loading flicker
        task.future.set_running_or_notify_cancel()
        finished = self._execute(task)
        self._ended(lane, task, finished)
        self._done(finished)
        self._apply_now(finished)

    # --- workers -------------------------------------------------------------------------------

    def _run(self, task: SliceTask) -> None:
        """Worker thread: run one request, then hand the result to the main thread."""
        lane = self._lanes.get(task.layer) if task.layer is not None else None
        if not task.future.set_running_or_notify_cancel():
            self._ended(lane, task, None)
            return
        if lane is not None:
            with self._lock:
                lane.started[task] = time.perf_counter()
        finished = self._execute(task)
        self._ended(lane, task, finished)
        self._deliver(finished)  # before the future completes, so ``wait`` sees it applied
        with self._lock:
            self._in_flight.discard(task)
        self._done(finished)

    def _ended(self, lane: Lane | None, task: SliceTask, finished: Finished | None) -> None:
        """``task`` ran (``finished``) or never started: it is no longer the layer's running
        request, and its compute time goes into the layer's estimate."""
        took = finished.compute_s if finished is not None and finished.error is None else None
        with self._lock:
            if lane is None:
                return
            lane.started.pop(task, None)
            if lane.current is task:
                lane.current = None
            if lane.finishing is task:
                lane.finishing = None
            if took is None:
                return
            kind = _slice.slice_kind(task.request)
            if lane.compute_s is None or lane.compute_kind != kind:
                lane.compute_s, lane.compute_kind = took, kind
            else:
                lane.compute_s = 0.7 * lane.compute_s + 0.3 * took
