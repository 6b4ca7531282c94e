"""The slicer: per-layer, latest-wins, cancellable asynchronous slicing for napari.

It is API-compatible with napari 0.9's ``napari.components._layer_slicer._LayerSlicer``
(``events.ready``, ``submit``, ``wait_until_idle``, ``force_sync``, ``_force_sync``, ``shutdown``)
and differs in how it schedules and applies work:

- Each layer is scheduled on its own, so a slow layer never holds back a fast one. A newer
  request starts at once; the one it supersedes is cancelled (its chunk reads stop: see
  :mod:`napari_async_slicing._reading`) unless it is at least a quarter done by the layer's measured
  read time and no other older request is already finishing, in which case it finishes and is
  shown on the way (intermediate planes while there is bandwidth). At most two reads per layer.
- Fast in-memory slices run inline on the main thread (no thread hop, NAP-4's "skip the delay").
- Responses are applied on the main thread, one layer at a time as each is ready, and only if
  they are still the newest for their layer: an older plane never replaces a newer one.
- ``layer.loaded`` / ``layer.events.loaded`` follow each layer's newest request; failures leave
  "loading" and become rate-limited napari notifications.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from napari.utils.events.event import EmitterGroup, Event

from napari_async_slicing import _napari_compat as compat
from napari_async_slicing import _switch_interval
from napari_async_slicing._options import SlicingOptions
from napari_async_slicing._cache import ChunkCache
from napari_async_slicing._reading import (
    CancelToken,
    NeedsIO,
    Prefetched,
    Progress,
    ReadCounters,
    SliceCancelled,
    bound_progress,
    bound_reading,
    bound_token,
    let_sent_reads_out,
    loop_calls_batched,
)
from napari_async_slicing.components._latency_log import LatencyLog
from napari_async_slicing.components._stats import LayerStats
from napari_async_slicing.layers import _slice

logger = logging.getLogger(__name__)


#: A superseded read keeps going if it is at least this far through the layer's usual read time
#: (0.25: at 40 ms steps over a 100 ms source about every other plane is shown on the way,
#: bench S1; 0.5 showed none).
FINISH_FRACTION = 0.25

#: In-memory requests measured below this run inline on the main thread (NAP-4: skip the delay
#: when slicing is known to be fast). Well under one 16 ms frame.
INLINE_BUDGET_S = 0.004

#: Lazy requests are tried inline from the chunk cache (no I/O allowed; a miss falls back to a
#: worker) while the layer's cached slices take at most this long, so a revisit shows within the
#: frame it was asked for.
CACHED_INLINE_BUDGET_S = 0.008

#: Steps further apart than this are not a steady scrub (no look-ahead prefetch).
STEADY_INTERVAL_S = 1.0

#: At rest, a multiscale layer's coarsest level is read for this many planes around the shown
#: one (at most ``COARSE_WINDOW_BYTES``, or an eighth of the cache budget): the first look of a
#: plane a jump away is then in the cache.
COARSE_WINDOW_PLANES = 64
COARSE_WINDOW_BYTES = 16 << 20


def _plane_at(plane: tuple, step: tuple) -> tuple:
    """``plane`` (see :func:`_plane_of`) moved to ``step``."""
    return (tuple(step), *plane[1:])


def _plane_of(dims: Any) -> tuple:
    """Which plane a request at ``dims`` shows: the step, dims order and ndisplay."""
    return (
        tuple(getattr(dims, 'current_step', ())),
        tuple(getattr(dims, 'order', ())),
        getattr(dims, 'ndisplay', 2),
    )


class SliceError(RuntimeError):
    """A layer's slice could not be loaded (the original error is the ``__cause__``)."""


@dataclass(eq=False)
class _Task:
    """One request for one layer, from submit to apply."""

    layer_ref: weakref.ReferenceType
    request: Any
    request_id: int
    epoch: int
    heavy: bool
    step: tuple
    force: bool = False
    #: Which plane the request shows: the step, dims order and ndisplay.
    plane: tuple = ()
    future: Future = field(default_factory=Future)
    token: CancelToken = field(default_factory=CancelToken)
    submitted: float = field(default_factory=time.perf_counter)
    wall: float = field(default_factory=time.time)
    started: float | None = None
    data_ready: float | None = None
    response: Any = None
    error: BaseException | None = None
    counters: ReadCounters = field(default_factory=ReadCounters)


@dataclass(eq=False)
class _Preview:
    """A partial response of a running task (progressive multiscale), for the main thread."""

    task: _Task
    response: Any


@dataclass(eq=False)
class _LayerState:
    #: The newest request's task (queued or running).
    current: _Task | None = None
    #: An older task allowed to finish because it was nearly done when superseded.
    finishing: _Task | None = None
    latest_id: int = -1
    #: The request whose response the layer shows, and whether that is a preview (a partial
    #: response: its final may still replace it; nothing older may).
    shown_id: int = -1
    shown_preview: bool = False
    #: The plane (see ``_Task.plane``) the layer shows.
    shown_plane: tuple = ()
    #: Bumped by synchronous slicing so responses from before it are never applied.
    epoch: int = 0
    loaded_callback: Callable[[], None] | None = None
    stats: LayerStats | None = None
    #: Moving average of how long this layer's requests take to compute (seconds), and the kind
    #: of slice it was measured on (``_slice.slice_kind``: data, dims order, ndisplay).
    compute_s: float | None = None
    compute_kind: tuple | None = None
    #: Moving average of this layer's slices served inline from the chunk cache (seconds).
    cached_s: float | None = None
    #: Prefetch (R14): the live dims, last requested step, motion (axis, +1/-1), and whether the
    #: newest applied slice read lazy data (nothing to prefetch for in-memory data).
    dims: Any = None
    last_step: tuple | None = None
    motion: tuple[int, int] | None = None
    wants_prefetch: bool = False
    #: Look-ahead while the step moves steadily: (axis, signed stride) of the last move, the
    #: same if the move before it was that stride too (else None), and when the last step came.
    stride: tuple[int, int] | None = None
    steady: tuple[int, int] | None = None
    stepped_at: float | None = None
    #: Whether the layer's last slice read lazy data (a look-ahead can help), None before one.
    lazy: bool | None = None
    write_callback: Callable[[Any], None] | None = None
    #: The last task served inline from the chunk cache, until another request comes.
    from_cache: _Task | None = None
    #: The request of the final response the layer shows (the coarse window is read around it).
    shown_request: Any = None


class _FailureNotifier:
    """At most one notification per layer per ``interval`` seconds, counting the rest.

    A notification is the message only (napari formats an exception's traceback, locals
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
        from napari.utils.notifications import Notification, NotificationSeverity, notification_manager

        notification_manager.dispatch(Notification(message, severity=NotificationSeverity.ERROR))
        return True


class AsyncLayerSlicer:
    """Slices layers off the main thread; see the module docstring.

    Events
    ------
    ready
        Emitted from a worker thread once per layer as its response is ready, with
        ``value={weakref(layer): response}`` (napari's ``_LayerSlicer`` emits one dict for all
        layers of a submit). Responses are applied by the slicer itself; listeners need not.
    """

    def __init__(self, options: SlicingOptions | None = None) -> None:
        self.options = options or SlicingOptions.from_env()
        self.events = EmitterGroup(source=self, ready=Event)
        self._force_sync = False
        self._interactive = ThreadPoolExecutor(
            self.options.workers, thread_name_prefix='napari-async-slicing'
        )
        self._heavy = ThreadPoolExecutor(
            self.options.heavy_slots, thread_name_prefix='napari-async-slicing-heavy'
        )
        #: Reads a running request does beside its own (progressive multiscale: the coarse level).
        self._beside = ThreadPoolExecutor(
            self.options.workers + self.options.heavy_slots,
            thread_name_prefix='napari-async-slicing-beside',
        )
        #: Prefetch (R14) runs on its own single thread, below every visible request, one plane
        #: at a time; a steady scrub's next plane has a thread of its own that only sends its
        #: reads (they run beside the visible ones).
        self._prefetch_pool = ThreadPoolExecutor(1, thread_name_prefix='napari-async-slicing-prefetch')
        self._ahead_pool = ThreadPoolExecutor(1, thread_name_prefix='napari-async-slicing-ahead')
        #: Prefetches not yet finished, with the (layer id, plane) each reads: a visible request
        #: cancels all but the one reading its own plane (it joins that one's chunk reads).
        self._prefetches: dict[CancelToken, tuple] = {}
        self.prefetch_counts = {'started': 0, 'done': 0, 'cancelled': 0}
        self._dims_copies: dict[int, tuple[tuple, Any]] = {}
        #: Decoded chunks of every lazily read layer of the viewer (R13).
        self.cache = ChunkCache(self.options.cache_bytes)
        self._lock = threading.RLock()
        self._states: weakref.WeakKeyDictionary[Any, _LayerState] = weakref.WeakKeyDictionary()
        #: Futures returned by ``submit`` by the layers they cover (as napari's slicer keeps).
        self._layers_to_task: dict[tuple[weakref.ReferenceType, ...], Future] = {}
        #: Tasks submitted and not yet handed to the main thread (``wait_until_idle`` waits on them).
        self._in_flight: set[_Task] = set()
        self._done: deque[_Task | _Preview] = deque()
        self._drain_scheduled = False
        self._call_on_main: Callable[[Callable[[], None]], None] | None = None
        #: Told when a layer starts or stops loading (the layer list's delayed cue; Qt only).
        self._loading_cue: Callable[[Any, bool], None] | None = None
        self._main_thread = threading.main_thread()
        self._no_wait_depth = 0
        #: While > 0 (see ``deferred``), tasks are queued but not started.
        self._defer_depth = 0
        self._deferred: list[_Task] = []
        #: While not None (see ``_holding_starts``), tasks to start once ``submit`` is done.
        self._held: list[_Task] | None = None
        self._notifier = _FailureNotifier()
        self._shut_down = False
        self.screenshot_timeout = self.options.screenshot_timeout
        self._log = LatencyLog(self.options.log) if self.options.log else None
        #: Held until shutdown (or until the slicer is garbage collected without one).
        self._release_switch_interval = weakref.finalize(
            self, _switch_interval.release, _switch_interval.claim(self.options.switch_interval)
        )

    # --- napari's _LayerSlicer API ---------------------------------------------------------

    @property
    def is_shut_down(self) -> bool:
        return self._shut_down

    @contextmanager
    def force_sync(self) -> Iterator[None]:
        """Temporarily slice synchronously on the calling (main) thread."""
        previous = self._force_sync
        self._force_sync = True
        try:
            yield
        finally:
            self._force_sync = previous

    @contextmanager
    def sync_slicing(self) -> Iterator[None]:
        """Finish and apply everything pending, then slice synchronously inside the block."""
        self.wait_until_idle()
        with self.force_sync():
            yield

    @contextmanager
    def no_wait(self) -> Iterator[None]:
        """Make ``wait_until_idle`` return at once (screenshots taken without waiting)."""
        self._no_wait_depth += 1
        try:
            yield
        finally:
            self._no_wait_depth -= 1

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Queue requests submitted inside the block; start only the newest per layer at its end.

        Used while napari adds a layer: it slices the new layer at the current dims and then moves
        dims to the centre, so without this the first read would be for a plane nobody sees.
        """
        self._defer_depth += 1
        try:
            yield
        finally:
            self._defer_depth -= 1
            if not self._defer_depth:
                self._start_deferred()

    def _start_deferred(self) -> None:
        with self._lock:
            tasks, self._deferred = self._deferred, []
            for task in tasks:
                if not task.future.cancelled():  # superseded ones were dropped unstarted
                    self._start(task)

    def submit(
        self, *, layers: Iterable[Any], dims: Any, force: bool = False
    ) -> Future[dict] | None:
        """Slice ``layers`` at ``dims``; return a future of ``{weakref(layer): response}``.

        Layers that napari cannot slice asynchronously, invisible layers, and every layer while
        ``_force_sync`` is set are sliced synchronously here, as napari does.
        """
        if self._shut_down:
            raise RuntimeError('cannot submit slices after the slicer was shut down')
        tasks: list[_Task] = []
        sync_layers = []
        with loop_calls_batched():  # the reads this step sends and cancels: one wake-up of zarr's loop
            for layer in layers:
                if not self._force_sync and layer.visible and _slice.is_async_sliceable(layer, dims):
                    tasks.append(self._make_task(layer, dims, force))
                else:
                    sync_layers.append(layer)
            tasks = self._submit_async(tasks, dims)
        for layer in sync_layers:
            self._slice_sync(layer, dims, force)
        if not tasks:
            return None
        return self._track(tasks)

    def _submit_async(self, tasks: list[_Task], dims: Any) -> list[_Task]:
        # Prefetch stays strictly below visible requests: all of it stops but the reads of the
        # planes asked for now (a visible request joins them) and of the steps a steady scrub
        # will ask for next.
        ahead = [(task, self._look_ahead(self._state(task.layer_ref()), task)) for task in tasks]
        if any(self._same_as_newest(self._state(task.layer_ref()), task) is None for task in tasks):
            keep = {(id(task.layer_ref()), task.plane) for task in tasks}
            keep.update((id(task.layer_ref()), _plane_at(task.plane, step))
                        for task, step in ahead if step is not None)
            self._cancel_prefetch(keep=keep)
        on_main = threading.current_thread() is self._main_thread
        with self._holding_starts(on_main):
            tasks = [self._schedule(task) for task in tasks]
            if on_main:
                # The reads sent at the step go out before Qt repaints the window (it holds the
                # GIL meanwhile), and before the workers' Python competes with them for it.
                let_sent_reads_out()
        for task, step in ahead:
            if step is not None:
                self._prefetch_steps(task.layer_ref(), dims, [step], ahead=True)
        return tasks

    def wait_until_idle(self, timeout: float | None = None) -> None:
        """Wait for all submitted slices; on the main thread also apply them before returning."""
        if self._no_wait_depth:
            return
        self._start_deferred()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                futures = [t.future for t in self._in_flight]
            if not futures:
                break
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            _, not_done = wait(futures, timeout=remaining)
            if not_done:
                raise TimeoutError(
                    f'Slicing {len(not_done)} tasks did not complete within timeout ({timeout}s).'
                )
        with self._lock:
            for key, future in list(self._layers_to_task.items()):
                if future.done():
                    del self._layers_to_task[key]
        if threading.current_thread() is self._main_thread:
            self._drain()

    def shutdown(self) -> None:
        """Cancel everything, wait for workers to stop, and disconnect listeners."""
        if self._shut_down:
            return
        self._shut_down = True
        with self._lock:
            states = list(self._states.items())
            for _, state in states:
                self._supersede_all(state)
        self._cancel_prefetch()
        for pool in self.pools():  # all at once: the wait is the slowest thread's, not the sum
            pool.shutdown(wait=False, cancel_futures=True)
        for pool in self.pools():
            pool.shutdown(wait=True)
        with self._lock:
            self._prefetches.clear()  # queued ones never started
        self.cache.clear()
        with self._lock:
            for task in list(self._in_flight):  # queued in an executor that never ran them
                self._drop(task)
        for layer, state in states:
            compat.mark_loaded(layer, state.latest_id)  # leave "loading" (a swap or close)
            self._disconnect_loaded(layer, state)
            self._unwatch_writes(layer, state)
        compat.unmanage_all(self)
        self._done.clear()
        if self._log is not None:
            self._log.close()
        self.events.disconnect()
        self.events.ready.disconnect()
        self._release_switch_interval()

    def pools(self) -> tuple[ThreadPoolExecutor, ...]:
        """Every thread pool of the slicer (its threads are gone once ``shutdown`` returns)."""
        return (self._interactive, self._heavy, self._beside, self._prefetch_pool, self._ahead_pool)

    def stats(self) -> list[dict]:
        """Per-layer latency (last, p50, p95 in ms), requests in flight and outcome counts."""
        with self._lock:
            in_flight: dict[Any, int] = {}
            for task in self._in_flight:
                layer = task.layer_ref()
                in_flight[layer] = in_flight.get(layer, 0) + 1
            states = list(self._states.items())
        rows = []
        for layer, state in states:
            stats = state.stats or LayerStats(getattr(layer, 'name', type(layer).__name__))
            stats.name = getattr(layer, 'name', stats.name)
            rows.append(stats.summary(in_flight.get(layer, 0)))
        return rows

    def cache_stats(self) -> dict:
        """Chunk cache totals (hits, misses, bytes, max_bytes, chunks, evictions) and prefetches."""
        return {**self.cache.stats(), 'prefetch': dict(self.prefetch_counts)}

    def prefetches_in_flight(self) -> int:
        """Prefetches (neighbour planes, read-ahead, coarse windows) queued or reading."""
        with self._lock:
            return len(self._prefetches)

    def data_changed(self, layer: Any) -> None:
        """The layer's data changed in place (``layer.refresh()``, painting): drop its chunks."""
        self.cache.forget(compat.data_arrays(layer))

    def forget(self, layer: Any) -> None:
        """The layer left the viewer: stop its reads, leave "loading", drop its state."""
        with self._lock:
            state = self._states.pop(layer, None)
            if state is None:
                return
            self._supersede_all(state)
        compat.mark_loaded(layer, state.latest_id)
        self._disconnect_loaded(layer, state)
        self._unwatch_writes(layer, state)
        compat.unmanage(layer)

    # --- hooks for the Qt side ---------------------------------------------------------------

    def attach_main_thread(self) -> None:
        """Apply responses on the Qt main thread (called by our ``QtViewer`` hook)."""
        from napari_async_slicing._qt._main_thread import MainThreadCaller

        self._call_on_main = MainThreadCaller()
        from napari_async_slicing._qt._loading_cue import loading_changed

        self._loading_cue = loading_changed

    # --- scheduling --------------------------------------------------------------------------

    def _state(self, layer: Any) -> _LayerState:
        state = self._states.get(layer)
        if state is None:
            state = self._states[layer] = _LayerState()
            self._connect_loaded(layer, state)
            self._watch_writes(layer, state)
            compat.manage(layer, self)
        return state

    def _make_task(self, layer: Any, dims: Any, force: bool) -> _Task:
        request = _slice.make_request(layer, dims)  # main thread, by value, no data access
        state = self._state(layer)
        step = tuple(getattr(dims, 'current_step', ()))
        self._track_motion(state, step)
        state.last_step, state.dims = step, dims
        return _Task(
            layer_ref=weakref.ref(layer),
            request=_slice.prepare(request, layer),
            request_id=request.id,
            epoch=state.epoch,
            heavy=_slice.is_heavy(request),
            step=step,
            force=force,
            plane=_plane_of(dims),
        )

    def _track_motion(self, state: _LayerState, step: tuple) -> None:
        """Direction of motion (for prefetch), and whether the step moves steadily: the same
        stride twice in a row, each within ``STEADY_INTERVAL_S`` (a drag, a held key, play)."""
        if state.last_step is None or len(state.last_step) != len(step):
            state.stride = state.steady = None
            return
        moved = [i for i, (a, b) in enumerate(zip(state.last_step, step)) if a != b]
        if not moved:
            return  # the same step again (napari submits each step twice)
        now = time.perf_counter()
        previous, state.stepped_at = state.stepped_at, now
        if len(moved) != 1:
            state.stride = state.steady = None
            return
        axis = moved[0]
        stride = (axis, step[axis] - state.last_step[axis])
        state.motion = (axis, 1 if stride[1] > 0 else -1)
        steady = (
            stride == state.stride and previous is not None and now - previous < STEADY_INTERVAL_S
        )
        state.steady = stride if steady else None
        state.stride = stride

    def _look_ahead(self, state: _LayerState, task: _Task) -> tuple | None:
        """The step the next request will most likely ask for while the step moves steadily
        (one stride on), so its reads start a step early; None if it does not.

        One stride only: reading further ahead saturated this 2-core test machine (bench S1:
        final plane 138-191 ms reading four strides ahead, 140-146 ms one ahead, 181-221 ms none).
        """
        if (
            not self.options.prefetch_radius
            or state.steady is None
            or not state.lazy
            or task.heavy
            or not self.cache.enabled
            or state.dims is None
            or _slice.in_memory(task.request)
        ):
            return None
        axis, stride = state.steady
        target = task.step[axis] + stride
        if not 0 <= target < compat.dims_nsteps(state.dims)[axis]:
            return None
        moved = list(task.step)
        moved[axis] = target
        return tuple(moved)

    def _schedule(self, task: _Task) -> _Task:
        """Queue ``task`` for its layer; return the task that will answer it."""
        layer = task.layer_ref()
        state = self._state(layer)
        with self._lock:
            newest = self._same_as_newest(state, task)
            if newest is not None:
                return newest  # an identical request is already on its way
            state.from_cache = None
        if self._runs_inline(state, task):
            return self._run_inline(state, task)
        preview = None
        if self._may_run_from_cache(state, task):
            # A progressive request's coarse first look goes first: shown now if cached, else
            # its reads are sent ahead of the data level's (the worker joins both).
            preview, coarse_first = self._cached_preview(task)
            if self._run_from_cache(state, task, coarse_first):
                return task
        compat.mark_unloaded(layer, task.request_id)
        with self._lock:
            self._in_flight.add(task)
            state.latest_id = task.request_id
            old = state.current
            if old is not None:
                if state.finishing is None and self._nearly_done(state, old):
                    state.finishing = old  # shown on the way, if still newer than what is shown
                else:
                    self._stop(old)
            state.current = task
            deferred = bool(self._defer_depth)
            if deferred:
                self._deferred.append(task)
            else:
                self._start(task)
        if preview is not None and not deferred:
            # Shown now rather than after the worker's hop (the worker's own preview of the
            # same plane is then not shown).
            self._apply_guarded(_Preview(task, preview))
        return task

    def _cached_preview(self, task: _Task) -> tuple[Any, bool]:
        """Main thread: ``task``'s coarse first look (progressive multiscale) if it is all in
        the cache, else None after sending its reads (not while requests are deferred); and
        whether the request's own reads may now be sent (its coarse look is on its way, or it
        reads none first)."""
        if not _slice.reads_coarse_first(task.request):
            return None, True
        if self._defer_depth:
            return None, False
        try:
            with self._reading(task.token, cache_only=True, send_missing=True):
                response = _slice.cached_preview(task.request)
        except NeedsIO:
            return None, True
        except Exception:  # noqa: BLE001 - the worker shows its preview as usual
            logger.debug('cached preview failed', exc_info=True)
            return None, False
        finally:
            # Its requests leave before the request's own are even handed to zarr's loop: sent
            # first, answered first (in the same batch they reached the server anywhere among
            # the data level's; cold jumps showed their first pixels 126 ms after the step at
            # 100 ms latency, 109 ms with this).
            let_sent_reads_out()
        return response, response is not None

    @contextmanager
    def _reading(self, token: CancelToken, **how: Any) -> Iterator[None]:
        """Bind ``token``, the cache and the user's read options to this thread for a request's
        reads; ``how``: see ``bound_reading``. Every path binds the same read timeout: a chunk
        read it starts may be joined by another path's reader (``_reading._shared_read``)."""
        with bound_token(token), bound_reading(
            self.cache,
            dask_client=self.options.dask_client,
            read_timeout=self.options.read_timeout,
            **how,
        ):
            yield

    def _same_as_newest(self, state: _LayerState, task: _Task) -> _Task | None:
        """napari submits each step twice: the second finds the first still running, or
        already shown from the cache."""
        newest = state.current or state.from_cache
        if (
            not task.force
            and newest is not None
            and not newest.token.cancelled
            and newest.epoch == task.epoch
            and _slice.same_request(newest.request, task.request)
        ):
            return newest
        return None

    def _nearly_done(self, state: _LayerState, task: _Task) -> bool:
        if task.started is None or state.compute_s is None:
            return False
        return time.perf_counter() - task.started >= FINISH_FRACTION * state.compute_s

    def _stop(self, task: _Task) -> None:
        """Supersede a task: drop it if it never started, else cancel its reads."""
        if task.started is not None or not self._drop(task):
            task.token.cancel()

    def _supersede_all(self, state: _LayerState) -> None:
        """Stop every task of the layer (sync slicing, inline slicing, shutdown)."""
        for task in (state.current, state.finishing):
            if task is not None:
                self._stop(task)
        state.current = state.finishing = None

    def _runs_inline(self, state: _LayerState, task: _Task) -> bool:
        """Fast in-memory slices skip the thread hop (R7, NAP-4): measured cheap on this kind of
        slice, or, not yet measured on it (a new layer, new data, a new order or ndisplay), small.
        Lazy data never runs here."""
        if threading.current_thread() is not self._main_thread or not _slice.in_memory(task.request):
            return False
        if state.compute_s is not None and state.compute_kind == _slice.slice_kind(task.request):
            return state.compute_s <= INLINE_BUDGET_S
        size = _slice.work_bytes(task.request)
        return size is not None and size <= _slice.FAST_SLICE_BYTES

    def _run_inline(self, state: _LayerState, task: _Task) -> _Task:
        """Slice on the main thread now; anything older for the layer becomes stale."""
        self._run_now(state, task)
        self._compute(task)
        self._finish(task)
        self._apply_guarded(task)
        return task

    def _run_now(self, state: _LayerState, task: _Task) -> None:
        """``task`` runs on the main thread now: it is the layer's newest, older ones are stale."""
        with self._lock:
            state.latest_id = task.request_id
            self._supersede_all(state)
        compat.set_newest_slice_id(task.layer_ref(), task.request_id)  # no loading flicker
        task.future.set_running_or_notify_cancel()

    def _may_run_from_cache(self, state: _LayerState, task: _Task) -> bool:
        return (
            self.cache.enabled
            and self._call_on_main is not None
            and threading.current_thread() is self._main_thread
            and not task.heavy
            and (state.cached_s is None or state.cached_s <= CACHED_INLINE_BUDGET_S)
            and not _slice.in_memory(task.request)
        )

    def _run_from_cache(self, state: _LayerState, task: _Task, send: bool = True) -> bool:
        """Slice on the main thread if every chunk is cached (a revisit); False if one is not,
        after sending the missing chunks' reads of the read that missed if ``send`` (the worker
        that runs the request next joins them: the reads go out at the step, not after the
        thread hop; not ahead of a coarse first look that is not on its way)."""
        started = time.perf_counter()
        try:
            # Not while requests are deferred (opening a layer: the step may still move).
            send = send and not self._defer_depth
            with self._reading(task.token, counters=task.counters, cache_only=True, send_missing=send):
                response = task.request()
        except NeedsIO:  # a chunk is not cached: read it on a worker
            task.counters = ReadCounters()
            return False
        except Exception:  # noqa: BLE001 - the worker path reports it as usual
            task.counters = ReadCounters()
            return False
        task.started, task.data_ready, task.response = started, time.perf_counter(), response
        took = task.data_ready - started
        state.cached_s = took if state.cached_s is None else 0.7 * state.cached_s + 0.3 * took
        self._run_now(state, task)
        state.from_cache = task
        self._finish(task)
        self._apply_guarded(task)
        self._maybe_prefetch()
        return True

    def _drop(self, task: _Task) -> bool:
        """Cancel a task that has not started; False if it already has."""
        if not task.future.cancel():
            return False
        self._in_flight.discard(task)
        self._record(task, task.layer_ref(), 'dropped')
        return True

    def _record(self, task: _Task, layer: Any, outcome: str) -> None:
        state = self._states.get(layer) if layer is not None else None
        if state is not None:
            if state.stats is None:
                state.stats = LayerStats(getattr(layer, 'name', type(layer).__name__))
            state.stats.add(outcome, task.submitted)
            state.stats.add_cache(task.counters.hits, task.counters.misses)
        if self._log is not None:
            error = task.error if outcome == 'failed' else None
            self._log.record(task, layer, outcome, error)

    @contextmanager
    def _holding_starts(self, hold: bool) -> Iterator[None]:
        """Inside the block (if ``hold``: main thread only), tasks are started at its end."""
        if not hold or self._held is not None:
            yield
            return
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            for task in held:
                if not task.future.cancelled():  # superseded within the block
                    self._start(task)

    def _start(self, task: _Task) -> None:
        if self._held is not None and threading.current_thread() is self._main_thread:
            self._held.append(task)
            return
        executor = self._heavy if task.heavy else self._interactive
        try:
            executor.submit(self._run, task)
        except RuntimeError:  # executor shut down
            self._drop(task)

    def _run(self, task: _Task) -> None:
        """Worker thread: run one request, then hand it to the main thread."""
        if not task.future.set_running_or_notify_cancel():
            self._next(task)
            with self._lock:
                self._in_flight.discard(task)
            return
        self._compute(task)
        self._next(task)
        self._enqueue(task)  # before the future completes, so wait_until_idle sees it
        with self._lock:
            self._in_flight.discard(task)
        self._finish(task)

    def _compute(self, task: _Task) -> None:
        """Run the request with its cancel token bound; record response or error and timings."""
        task.started = time.perf_counter()
        try:
            if task.token.cancelled:
                raise SliceCancelled
            with self._reading(task.token, counters=task.counters), bound_progress(
                self._progress(task)
            ):
                response = task.request()
            task.token.raise_if_cancelled()
        except SliceCancelled as exc:
            task.error = exc
        except Exception as exc:  # noqa: BLE001 - reported on the main thread
            task.error = exc
            # The traceback: here (off the main thread, formatted only if debug is on).
            logger.debug('slice of request %s failed', task.request_id, exc_info=exc)
        else:
            task.response = response
        task.data_ready = time.perf_counter()
        if task.error is None:
            layer = task.layer_ref()
            state = self._states.get(layer) if layer is not None else None
            if state is not None:
                took = task.data_ready - task.started
                kind = _slice.slice_kind(task.request)
                if state.compute_s is None or state.compute_kind != kind:
                    state.compute_s, state.compute_kind = took, kind
                else:
                    state.compute_s = 0.7 * state.compute_s + 0.3 * took

    def _progress(self, task: _Task) -> Progress | None:
        """Partial results of a worker's task go to the main thread (none inline or bare)."""
        if self._call_on_main is None or threading.current_thread() is self._main_thread:
            return None
        return Progress(lambda response: self._enqueue(_Preview(task, response)), self._beside)

    def _finish(self, task: _Task) -> None:
        """Emit ``ready`` (napari's event) and complete the task's future."""
        if task.error is None:
            result = {task.layer_ref: task.response}
            self.events.ready(value=result)
            task.future.set_result(result)
        else:
            task.future.set_exception(task.error)

    def _next(self, task: _Task) -> None:
        """A task of a layer ended: forget it."""
        with self._lock:
            layer = task.layer_ref()
            state = self._states.get(layer) if layer is not None else None
            if state is None:
                return
            if state.current is task:
                state.current = None
            if state.finishing is task:
                state.finishing = None

    def _track(self, tasks: list[_Task]) -> Future:
        """The future ``submit`` returns: one task's own, or one that merges several."""
        key = tuple(t.layer_ref for t in tasks)
        if len(tasks) == 1:
            future = tasks[0].future
        else:
            future = Future()
            future.set_running_or_notify_cancel()
            remaining = [len(tasks)]
            lock = threading.Lock()

            def one_done(_: Future) -> None:
                with lock:
                    remaining[0] -= 1
                    if remaining[0]:
                        return
                merged: dict = {}
                for t in tasks:
                    if t.error is not None and not isinstance(t.error, SliceCancelled):
                        future.set_exception(t.error)
                        return
                    if t.response is not None and t.error is None:
                        merged[t.layer_ref] = t.response
                future.set_result(merged)

            for t in tasks:
                t.future.add_done_callback(one_done)
        with self._lock:
            self._layers_to_task[key] = future

        def forget(_: Future) -> None:
            with self._lock:
                if self._layers_to_task.get(key) is future:
                    del self._layers_to_task[key]

        future.add_done_callback(forget)
        return future

    def _slice_sync(self, layer: Any, dims: Any, force: bool) -> None:
        """napari's synchronous path; in-flight async responses for the layer become stale."""
        state = self._states.get(layer)
        if state is not None:
            with self._lock:
                state.epoch += 1
                self._supersede_all(state)
        compat.slice_dims_sync(layer, dims, force)
        if state is not None:
            compat.mark_loaded(layer, state.latest_id)

    # --- applying on the main thread ----------------------------------------------------------

    def _enqueue(self, task: _Task | _Preview) -> None:
        with self._lock:
            self._done.append(task)
            if self._call_on_main is None:
                call = None
            elif self._drain_scheduled:
                return
            else:
                self._drain_scheduled = True
                call = self._call_on_main
        if call is None:
            # No Qt window attached (a bare ViewerModel): apply where the work finished, as
            # napari's slicer does.
            self._drain()
        else:
            call(self._drain)

    def _drain(self) -> None:
        with self._lock:
            self._drain_scheduled = False
        items = []
        while True:
            try:
                items.append(self._done.popleft())
            except IndexError:
                break
        # Each layer shows at most one plane per drain, its newest: one texture upload, not one
        # per response that finished while the main thread was busy (nor a coarse preview
        # right before its own final).
        newest: dict[int, int] = {}
        for item in items:
            if isinstance(item, _Task) and item.error is None:
                key = id(item.layer_ref())
                newest[key] = max(newest.get(key, 0), item.request_id)
        for item in items:
            task = item.task if isinstance(item, _Preview) else item
            newer = newest.get(id(task.layer_ref()), 0)
            if isinstance(item, _Preview):
                if task.request_id > newer:
                    self._apply_guarded(item)
                continue
            self._apply_guarded(item, skip=task.request_id < newer)
        self._maybe_prefetch()

    def _apply_guarded(self, item: _Task | _Preview, skip: bool = False) -> None:
        """Show ``item`` (unless ``skip``: then only its outcome is recorded); if that raises,
        say so: one layer's apply must not strand the others, nor raise out of the dims setter
        that submitted it (inline and cached slices)."""
        try:
            if isinstance(item, _Preview):
                self._apply_preview(item)
            else:
                self._apply(item, skip)
        except Exception:  # noqa: BLE001
            self._apply_failed(item)

    def _apply(self, task: _Task, skip: bool = False) -> None:
        layer = task.layer_ref()
        if layer is None or self._shut_down:
            return
        state = self._states.get(layer)
        if state is None:
            return
        if isinstance(task.error, SliceCancelled):
            outcome = 'cancelled'  # superseded; the newer request owns the loading state
        elif task.error is not None:
            outcome = 'failed'
            compat.mark_loaded(layer, task.request_id)
            if task.request_id == state.latest_id and task.epoch == state.epoch:
                self._report_failure(layer, task)
        elif not skip and task.epoch == state.epoch and (
            task.request_id > state.shown_id
            or (task.request_id == state.shown_id and state.shown_preview)
        ):
            outcome = 'applied'
            state.shown_id, state.shown_preview, state.shown_plane = (
                task.request_id, False, task.plane
            )
            state.lazy = not _slice.in_memory(task.request)
            state.wants_prefetch = not task.heavy and state.lazy
            state.shown_request = task.request
            _slice.apply(layer, task.response)
            compat.mark_loaded(layer, task.request_id)
        else:
            outcome = 'stale'
            compat.mark_loaded(layer, task.request_id)
        self._record(task, layer, outcome)

    def _apply_failed(self, item: _Task | _Preview) -> None:
        """Showing a response raised (in napari's or our apply): say so, leave "loading"."""
        error = sys.exc_info()[1]
        if isinstance(item, _Preview):  # a preview is a bonus: its final still comes
            logger.debug('showing a preview failed', exc_info=True)
            return
        layer = item.layer_ref()
        if layer is None:
            return
        logger.debug('showing a response failed', exc_info=error)
        compat.mark_loaded(layer, item.request_id)
        item.error = error
        self._report_failure(layer, item)

    def _apply_preview(self, preview: _Preview) -> None:
        """Show a partial response if its task is still the layer's newest and not yet shown."""
        task = preview.task
        layer = task.layer_ref()
        if layer is None or self._shut_down or task.token.cancelled or task.error is not None:
            return  # gone, superseded, or its final read failed (reported; nothing to refine)
        state = self._states.get(layer)
        if (
            state is None
            or task.epoch != state.epoch
            or task.request_id != state.latest_id
            or task.request_id <= state.shown_id
            or task.plane == state.shown_plane
        ):
            # Superseded, its final is already shown, or the layer already shows this plane
            # (at a level at least as fine: another data level was asked for, e.g. by a zoom).
            return
        _slice.apply(layer, preview.response)
        state.shown_id, state.shown_preview, state.shown_plane = task.request_id, True, task.plane
        if state.stats is not None:
            state.stats.add('preview', task.submitted)

    def _report_failure(self, layer: Any, task: _Task) -> None:
        error = task.error
        name = getattr(layer, 'name', type(layer).__name__)
        where = f' at step {task.step}' if task.step else ''
        message = f"Could not load layer '{name}'{where}: {type(error).__name__}: {error}"
        self._notifier.report(id(layer), message)

    # --- prefetch (R14) -------------------------------------------------------------------

    def _cancel_prefetch(self, keep: set | None = None) -> None:
        """A visible request arrived: stop every prefetch (queued ones never start) but those
        reading a plane in ``keep``, {(layer id, plane)}: the plane asked for (its chunk reads
        are shared with the visible request's, ``_reading._shared_read``) and a steady scrub's
        next planes."""
        keep = keep or set()
        with self._lock:
            tokens = [token for token, plane in self._prefetches.items() if plane not in keep]
            for token in tokens:
                del self._prefetches[token]
        for token in tokens:
            token.cancel()

    def _maybe_prefetch(self) -> None:
        """Main thread, once nothing visible is in flight: queue neighbour planes of the layers
        just shown, in the direction of motion first (radius ``prefetch_radius``)."""
        radius = self.options.prefetch_radius
        if not radius or not self._may_prefetch():
            return
        with self._lock:
            if self._in_flight:
                return  # the last visible response will ask again
            wanted = [(layer, state) for layer, state in self._states.items() if state.wants_prefetch]
        for layer, state in wanted:
            state.wants_prefetch = False
            dims, step = state.dims, state.last_step
            if dims is None or step is None:
                continue
            axis, sign = state.motion or (compat.default_scrub_axis(dims), 1)
            if axis is None or axis >= len(step):
                continue
            self._prefetch_coarse_window(layer, state, axis)
            nsteps = compat.dims_nsteps(dims)[axis]
            offsets = [sign * k for k in range(1, radius + 1)] + [-sign * k for k in range(1, radius + 1)]
            steps = []
            for offset in offsets:
                if 0 <= step[axis] + offset < nsteps:
                    moved = list(step)
                    moved[axis] += offset
                    steps.append(tuple(moved))
            self._prefetch_steps(layer, dims, steps)

    def _prefetch_coarse_window(self, layer: Any, state: _LayerState, axis: int) -> None:
        """Main thread, at rest: read the coarsest level of the planes around the shown one along
        world ``axis`` (multiscale layers; one lazy read, sent at once, small by construction:
        ``COARSE_WINDOW_*``). Like all prefetch it stops when a visible request comes."""
        request, dims = state.shown_request, state.dims
        data_axis = compat.layer_axis(layer, axis, dims.ndim)
        if request is None or data_axis is None:
            return
        budget = min(self.cache.max_bytes // 8, COARSE_WINDOW_BYTES)
        try:
            window = _slice.coarse_window(request, data_axis, budget, COARSE_WINDOW_PLANES)
        except Exception:  # noqa: BLE001 - prefetch is best effort
            logger.debug('coarse window failed', exc_info=True)
            return
        if window is None:
            return
        key = (id(layer), 'coarse window')
        token = CancelToken()
        with self._lock:
            if key in self._prefetches.values():
                return
            self._prefetches[token] = key
        try:
            self._ahead_pool.submit(self._run_prefetch, token, window.__array__, False)
        except RuntimeError:  # shut down
            pass

    def _may_prefetch(self) -> bool:
        return (
            self.cache.enabled
            and not self._shut_down
            and self._call_on_main is not None  # a Qt main thread to build requests on
            and threading.current_thread() is self._main_thread
        )

    def _prefetch_steps(self, layer: Any, dims: Any, steps: list[tuple], ahead: bool = False) -> None:
        """Main thread: read ``layer``'s planes at ``steps`` into the cache (napari's requests
        for them, built here on a copy of ``dims``) unless they are on their way already; one
        at a time, or (``ahead``, a steady scrub's next plane) sent at once."""
        if not steps or layer is None or not getattr(layer, 'visible', True) or not self._may_prefetch():
            return
        with self._lock:
            reading = set(self._prefetches.values())
        plane = _plane_of(dims)
        steps = [step for step in steps if (id(layer), _plane_at(plane, step)) not in reading]
        if not steps:
            return
        copy = self._dims_copy(dims)
        for step in steps:
            copy.current_step = step
            try:
                request = _slice.prepare(compat.make_slice_request(layer, copy))
            except Exception:  # noqa: BLE001 - prefetch is best effort
                logger.debug('prefetch request failed', exc_info=True)
                return
            token = CancelToken()
            with self._lock:
                self._prefetches[token] = (id(layer), _plane_at(plane, step))
            pool = self._ahead_pool if ahead else self._prefetch_pool
            try:
                pool.submit(self._run_prefetch, token, request, not ahead)
            except RuntimeError:  # shut down
                return

    def _dims_copy(self, dims: Any) -> Any:
        """A detached copy of ``dims`` to build prefetch requests on, kept while the viewer's
        dims differ from it only in their step (a copy costs more than a request)."""
        key = compat.dims_signature(dims)
        cached = self._dims_copies.get(id(dims))
        if cached is None or cached[0] != key:
            cached = self._dims_copies[id(dims)] = (key, compat.detached_dims(dims))
        return cached[1]

    def _run_prefetch(self, token: CancelToken, request: Callable[[], Any], wait_for_reads: bool) -> None:
        """Prefetch thread: run a neighbour's request (or a coarse window's read) only as far as
        its first read, which sends the chunk reads (never applied; its thumbnail and display
        work are not done); then wait for them (cancellably) if ``wait_for_reads``."""
        sent = None
        try:
            if token.cancelled:
                raise SliceCancelled
            self.prefetch_counts['started'] += 1
            with self._reading(token, prefetch=True):
                request()
            self.prefetch_counts['done'] += 1  # read nothing lazily
        except Prefetched as prefetched:
            sent = prefetched.future
            if sent is None:
                self.prefetch_counts['done'] += 1
        except SliceCancelled:
            self.prefetch_counts['cancelled'] += 1
        except Exception:  # noqa: BLE001 - a failed prefetch is retried when the plane is visited
            logger.debug('prefetch failed', exc_info=True)
        if sent is None:
            with self._lock:
                self._prefetches.pop(token, None)
            return
        token.add_callback(sent.cancel)
        sent.add_done_callback(lambda future: self._prefetch_done(token, future))
        if wait_for_reads:
            wait([sent])

    def _prefetch_done(self, token: CancelToken, future: Future) -> None:
        """zarr's loop: a prefetch's chunk reads finished, failed or were cancelled."""
        if future.cancelled():
            self.prefetch_counts['cancelled'] += 1
        elif future.exception() is not None:
            logger.debug('prefetch failed: %r', future.exception())
        else:
            self.prefetch_counts['done'] += 1
        with self._lock:
            self._prefetches.pop(token, None)

    # --- data written in place --------------------------------------------------------------

    def _watch_writes(self, layer: Any, state: _LayerState) -> None:
        """Painting writes into a Labels layer's data: its cached chunks must go."""
        events = getattr(layer, 'events', None)
        if events is None:
            return
        layer_ref = weakref.ref(layer)

        def written(event: Any = None) -> None:
            target = layer_ref()
            if target is not None:
                self.data_changed(target)

        for name in ('paint', 'labels_update'):
            if hasattr(events, name):
                getattr(events, name).connect(written)
        state.write_callback = written

    def _unwatch_writes(self, layer: Any, state: _LayerState) -> None:
        events = getattr(layer, 'events', None)
        if events is None or state.write_callback is None:
            return
        for name in ('paint', 'labels_update'):
            if hasattr(events, name):
                getattr(events, name).disconnect(state.write_callback)
        state.write_callback = None

    # --- loading cue ----------------------------------------------------------------------

    def _connect_loaded(self, layer: Any, state: _LayerState) -> None:
        """Forward napari's internal loaded signal to ``layer.events.loaded`` (unwired in 0.9)."""
        signal = compat.loaded_signal(layer)
        events = getattr(layer, 'events', None)
        if signal is None or events is None or not hasattr(events, 'loaded'):
            return
        layer_ref = weakref.ref(layer)
        cue = self._loading_cue

        def forward() -> None:
            target = layer_ref()
            if target is not None:
                if cue is not None:
                    cue(target, target.loaded)
                target.events.loaded(value=target.loaded)

        signal.connect(forward)
        state.loaded_callback = forward

    def _disconnect_loaded(self, layer: Any, state: _LayerState) -> None:
        signal = compat.loaded_signal(layer)
        if signal is not None and state.loaded_callback is not None:
            signal.disconnect(state.loaded_callback)
            state.loaded_callback = None
