"""The slicer napari talks to: napari 0.9's ``_LayerSlicer`` API over our parts.

A request's way: on the main thread ``submit`` builds napari's by-value request once per layer
and step (:mod:`~napari_async_slicing.layers._slice`), the :class:`Scheduler` runs it inline (a
fast in-memory slice) or on a worker, where its reads go through the read queue
(:mod:`napari_async_slicing._reading`); the worker returns a :class:`Finished`, and the
:class:`Applier` shows it on the main thread if it is still the layer's newest. The
:class:`Prefetcher` reads ahead from what the requests read. This class wires them and holds no
policy of its own.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from napari.utils.events.event import EmitterGroup, Event

from napari_async_slicing import _gc_freeze, _switch_interval
from napari_async_slicing import _napari_compat as compat
from napari_async_slicing._cache import ChunkCache
from napari_async_slicing._options import SlicingOptions
from napari_async_slicing._reading import (
    Env,
    Progress,
    ReadQueue,
    batched,
    result_of,
    start_on_loop,
)
from napari_async_slicing._reading._tensorstore import engine_for
from napari_async_slicing.components import _registry
from napari_async_slicing.components._applier import Applier
from napari_async_slicing.components._hooks import LayerHooks
from napari_async_slicing.components._motion import Motion
from napari_async_slicing.components._prefetch import Prefetcher, step_info
from napari_async_slicing.components._scheduler import Scheduler
from napari_async_slicing.components._stats import Recorder
from napari_async_slicing.components._task import Finished, SliceTask, merged, plane_of
from napari_async_slicing.components._worker import run_request
from napari_async_slicing.layers import _slice

logger = logging.getLogger(__name__)


class AsyncLayerSlicer:
    """Slices layers off the main thread; see the module docstring.

    Events
    ------
    ready
        Emitted once per layer as its response is ready (from the thread that computed it),
        with ``value={weakref(layer): response}``. Responses are applied by the slicer itself;
        listeners need not.
    """

    def __init__(self, options: SlicingOptions | None = None) -> None:
        self.options = options = options or SlicingOptions.from_env()
        self.events = EmitterGroup(source=self, ready=Event)
        self._force_sync = False
        self.screenshot_timeout = options.screenshot_timeout
        #: Decoded chunks of every lazily read layer of the viewer (R13).
        self.cache = ChunkCache(options.cache_bytes)
        #: Threads for reads that block (dask computes, plugin array-likes).
        self._readers = ThreadPoolExecutor(options.workers, thread_name_prefix='napari-async-slicing-read')
        #: tensorstore's context if it reads zarr arrays (``options.read_engine``), else None;
        #: closed at shutdown. Its own cache is off: ``self.cache`` holds every decoded chunk.
        self._tensorstore = engine_for(options.read_engine, options.read_timeout or None)
        self.queue = ReadQueue(
            self.cache,
            read_timeout=options.read_timeout,
            env=Env(self._readers, options.dask_client, self._tensorstore),
        )
        self._recorder = Recorder(options.log)
        self._scheduler = Scheduler(
            options,
            execute=self._execute,
            deliver=lambda finished: self._applier.deliver(finished),  # the applier is made next
            apply_now=lambda finished: self._applier.apply(finished),
            done=self._done,
            cached_first=self._cached_first,
        )

        def idle() -> bool:
            return not self._scheduler.in_flight()

        self._applier = Applier(
            self._recorder,
            epoch_of=self._scheduler.epoch,
            is_newest=self._scheduler.is_newest,
            idle=idle,
            rested=self._rested,
        )
        self._freezer = _gc_freeze.Freezer(options.freeze_gc, idle=idle)
        self._prefetcher = Prefetcher(self.queue, options.prefetch_radius)
        self._hooks = LayerHooks(self.data_changed)
        self._motion: weakref.WeakKeyDictionary[Any, Motion] = weakref.WeakKeyDictionary()
        #: Futures returned by ``submit`` by the layers they cover (as napari's slicer keeps).
        self._layers_to_task: dict[tuple[weakref.ReferenceType, ...], Future] = {}
        self._lock = threading.Lock()
        self._main_thread = threading.main_thread()
        self._no_wait_depth = 0
        self._shut_down = False
        #: Held until shutdown (or until the slicer is garbage collected without one).
        self._release_switch_interval = weakref.finalize(
            self, _switch_interval.release, _switch_interval.claim(options.switch_interval)
        )

    # --- napari's _LayerSlicer API -------------------------------------------------------------

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

    def submit(self, *, layers: Iterable[Any], dims: Any, force: bool = False) -> Future[dict] | None:
        """Slice ``layers`` at ``dims``; return a future of ``{weakref(layer): response}``.

        Layers napari cannot slice asynchronously, invisible layers, and every layer while
        ``_force_sync`` is set are sliced synchronously here, as napari does.
        """
        if self._shut_down:
            raise RuntimeError('cannot submit slices after the slicer was shut down')
        tasks: list[SliceTask] = []
        sync_layers = []
        with batched():  # what this step tells the IO loop: one wake-up
            for layer in layers:
                if not self._force_sync and layer.visible and _slice.is_async_sliceable(layer, dims):
                    tasks.append(self._submit_one(layer, dims, force))
                else:
                    sync_layers.append(layer)
        for layer in sync_layers:
            self._scheduler.slice_sync(layer, dims, force)
        return self._track(tasks) if tasks else None

    def wait_until_idle(self, timeout: float | None = None) -> None:
        """Wait for all submitted slices; on the main thread also apply them before returning."""
        if self._no_wait_depth:
            return
        self._scheduler.wait(timeout)
        with self._lock:
            for key, future in list(self._layers_to_task.items()):
                if future.done():
                    del self._layers_to_task[key]
        if threading.current_thread() is self._main_thread:
            self._applier.flush()

    def shutdown(self) -> None:
        """Cancel everything, stop every thread, and disconnect listeners."""
        if self._shut_down:
            return
        self._shut_down = True
        layers = self._scheduler.shutdown()
        close = start_on_loop(_close(self.queue))
        try:
            result_of(close, timeout=1.0)
        except Exception:
            logger.debug('closing the read queue', exc_info=True)
        self._readers.shutdown(wait=False, cancel_futures=True)
        self._readers.shutdown(wait=True)
        if self._tensorstore is not None:
            self._tensorstore.close()
        self.cache.clear()
        for layer, latest_id in layers:
            compat.mark_loaded(layer, latest_id)  # leave "loading" (a swap or close)
        for layer in self._hooks.layers():
            self._hooks.unwatch(layer)
        _registry.unmanage_all(self)
        self._applier.close()
        self._recorder.close()
        self.events.disconnect()
        self.events.ready.disconnect()
        self._release_switch_interval()
        self._freezer.close()

    # --- ours ----------------------------------------------------------------------------------

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

    def deferred(self) -> Any:
        """Queue requests submitted inside the block; start the newest per layer at its end."""
        return self._scheduler.deferred()

    def attach_main_thread(self, call_on_main: Callable[[Callable[[], None]], None]) -> None:
        """Apply responses on the main thread through ``call_on_main`` (Qt: a posted event)."""
        self._applier.call_on_main = call_on_main

    def data_changed(self, layer: Any) -> None:
        """The layer's data changed in place (``layer.refresh()``, painting): drop its chunks."""
        self.cache.forget(compat.data_arrays(layer))

    def forget(self, layer: Any) -> None:
        """The layer left the viewer: stop its reads, leave "loading", disconnect from it."""
        latest_id = self._scheduler.forget(layer)
        if latest_id is not None:
            compat.mark_loaded(layer, latest_id)
        self._hooks.unwatch(layer)
        self._applier.forget(layer)
        self._recorder.forget(layer)
        self._prefetcher.forget(id(layer))
        self._motion.pop(layer, None)
        _registry.unmanage(layer)
        _gc_freeze.thaw()  # what held the layer in cycles may be frozen

    def knows(self, layer: Any) -> bool:
        """Whether the slicer has sliced ``layer`` (and not forgotten it)."""
        return layer in self._scheduler.layers()

    def pools(self) -> tuple[ThreadPoolExecutor, ...]:
        """Every thread pool of the slicer (its threads are gone once ``shutdown`` returns)."""
        return (*self._scheduler.pools(), self._readers)

    def stats(self) -> list[dict]:
        """Per-layer latency (last, p50, p95 in ms), requests in flight and outcome counts."""
        in_flight: dict[Any, int] = {}
        for task in self._scheduler.in_flight():
            in_flight[task.layer] = in_flight.get(task.layer, 0) + 1
        return self._recorder.rows(self._scheduler.layers(), in_flight)

    @property
    def read_engine(self) -> str:
        """What reads zarr arrays: ``'tensorstore'`` or ``'zarr'`` (``options.read_engine``
        resolved; arrays tensorstore cannot read are read by zarr-python all the same)."""
        return 'zarr' if self._tensorstore is None else 'tensorstore'

    @property
    def prefetch_counts(self) -> dict:
        """Background chunk reads (previews, prefetch): started, read, cancelled."""
        return self.queue.counts

    def cache_stats(self) -> dict:
        """Chunk cache totals (hits, misses, bytes, max_bytes, chunks, evictions) and prefetch
        (and, reading with tensorstore, what it read: ``TensorstoreEngine.stats``)."""
        stats = {**self.cache.stats(), 'prefetch': dict(self.queue.counts)}
        if self._tensorstore is not None:
            stats['tensorstore'] = self._tensorstore.stats()
        return stats

    def prefetches_in_flight(self) -> int:
        """Background chunk reads (neighbour planes, read-ahead, coarse windows) queued or reading."""
        return self.queue.background

    # --- parts' callbacks ----------------------------------------------------------------------

    def _submit_one(self, layer: Any, dims: Any, force: bool) -> SliceTask:
        """Main thread: the task answering ``layer`` at ``dims`` (napari's request built once)."""
        self._hooks.watch(layer)
        _registry.manage(layer, self)
        key = compat.dims_signature(dims, with_step=True)
        if not force:
            task = self._scheduler.coalesced(layer, key)
            if task is not None:
                return task
        request = _slice.make_request(layer, dims)  # by value, no data access
        task = SliceTask(
            layer_ref=weakref.ref(layer),
            request=_slice.prepare(request, layer),
            request_id=request.id,
            epoch=self._scheduler.lane(layer).epoch,
            heavy=_slice.is_heavy(request),
            plane=plane_of(dims),
            force=force,
        )
        if not _slice.in_memory(task.request):
            hold = self._stepped(layer, dims, task)
            if hold:
                task = dataclasses.replace(task, hold_s=hold)
        return self._scheduler.schedule(task, key)

    def _stepped(self, layer: Any, dims: Any, task: SliceTask) -> float:
        """Tell the prefetcher of ``task``'s step; how long its data-level reads wait
        (``Move.hold_s``)."""
        motion = self._motion.get(layer)
        if motion is None:
            motion = self._motion[layer] = Motion()
        info = step_info(layer, dims, task, motion)
        self._prefetcher.stepped(id(layer), info)
        return info.move.hold_s if info.move is not None else 0.0

    def _execute(self, task: SliceTask) -> Finished:
        """Run ``task``'s request (a worker, or inline) with its read context bound."""
        progress = None
        if threading.current_thread() is not self._main_thread and self._applier.call_on_main is not None:
            progress = Progress(
                lambda response: self._applier.deliver(Finished(task, response, preview=True)),
                self._scheduler.submit_beside,
            )
        return run_request(task, self.queue, self._prefetcher.observer(task), progress)

    def _rested(self, layers: list[Any]) -> None:
        """Main thread: these layers show their newest plane and nothing visible is in flight."""
        self._prefetcher.rested([id(layer) for layer in layers])
        self._freezer.rested(self._applier.call_on_main)

    def _cached_first(self, task: SliceTask) -> None:
        """A step at rest: once napari's step handling is done, before the repaint it asked for,
        show the plane if the chunk cache holds all of it (the worker's answer is then stale)."""
        post = getattr(self._applier.call_on_main, 'post', None)
        if post is None or not self.cache.enabled:
            return

        def show_if_cached() -> None:
            if task.future.done() or not self._scheduler.is_newest(task):
                return  # answered or superseded meanwhile
            finished = run_request(task, self.queue, None, None, cache_only=True)
            if finished.error is None:
                self._applier.apply(finished)

        post(show_if_cached)

    def _done(self, finished: Finished) -> None:
        """Emit ``ready`` (napari's event) and complete the task's future."""
        task = finished.task
        if finished.error is None:
            result = {task.layer_ref: finished.response}
            self.events.ready(value=result)
            task.future.set_result(result)
        else:
            task.future.set_exception(finished.error)

    def _track(self, tasks: list[SliceTask]) -> Future:
        """The future ``submit`` returns: one task's own, or one that merges several."""
        key = tuple(t.layer_ref for t in tasks)
        future = tasks[0].future if len(tasks) == 1 else merged([t.future for t in tasks])
        with self._lock:
            self._layers_to_task[key] = future

        def forget(done: Future) -> None:  # not ``future``: a cycle would keep its result
            with self._lock:
                if self._layers_to_task.get(key) is done:
                    del self._layers_to_task[key]

        future.add_done_callback(forget)
        return future


async def _close(queue: ReadQueue) -> None:
    queue.close()
