"""Instruments that run inside a viewer process: a main-thread heartbeat, a watch on the data
vispy holds for a layer, an optional stall sampler, and bounded Qt event-loop helpers.

All timestamps are ``time.perf_counter()`` seconds.
"""

from __future__ import annotations

import bisect
import collections
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from napari_async_slicing._bench._config import READER_GROUPS
from napari_async_slicing.testing import which_plane

now = time.perf_counter


# -- Qt loop helpers -------------------------------------------------------------------------------


def run_for(seconds: float) -> None:
    """Run the Qt event loop for ``seconds`` (timers, paints and queued signals all run)."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(max(0, int(seconds * 1000)), loop.quit)
    loop.exec_()


def run_until(predicate: Callable[..., Any], timeout: float, poll_ms: int = 2) -> bool:
    """Run the Qt event loop until ``predicate()`` is true or ``timeout`` seconds pass."""
    from qtpy.QtCore import QEventLoop, QTimer

    if predicate():
        return True
    loop = QEventLoop()
    deadline = now() + timeout
    result = {'ok': False}

    def check() -> None:
        if predicate():
            result['ok'] = True
            loop.quit()
        elif now() >= deadline:
            loop.quit()

    poll = QTimer()
    poll.timeout.connect(check)
    poll.start(poll_ms)
    loop.exec_()
    poll.stop()
    return result['ok']


# -- identifying planes ----------------------------------------------------------------------------


def _as_2d(data: Any) -> np.ndarray | None:
    arr = np.asarray(data)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    return arr if arr.ndim == 2 and arr.size else None


def _stride(arr: np.ndarray, max_side: int = 64) -> int:
    level = 0
    while max(arr.shape) > max_side << level:
        level += 1
    return level


def pattern_plane(data: Any) -> int | None:
    """Which sample-volume plane ``data`` is (``testing.which_plane``, on a regular subgrid).

    Checking every 2**k-th row and column is exactly ``which_plane`` at level ``k``, so it stays
    cheap (at most 64×64 values compared) on the main thread.
    """
    arr = _as_2d(data)
    if arr is None:
        return None
    level = _stride(arr)
    step = 2**level
    return which_plane(arr[::step, ::step], level=level)


def level_plane_identifier(
    level_shapes: list[tuple[int, int]],
) -> Callable[[Any], tuple[int, int] | None]:
    """For a multiscale sample: ``identify(data) -> (plane, level)``, or ``None``.

    ``level_shapes`` are the (Y, X) shapes of the levels. The level is the one whose plane shape
    ``data`` has (then any level it fits in, for a crop that starts at the origin); the plane is
    ``which_plane(data, level=k)``, checked on a regular subgrid as in :func:`pattern_plane`.
    Tiny arrays (napari's 1x1 placeholder) are not identified.
    """
    shapes = [(int(s[0]), int(s[1])) for s in level_shapes]

    def identify(data: Any) -> tuple[int, int] | None:
        arr = _as_2d(data)
        if arr is None or min(arr.shape) < 2:
            return None
        exact = [k for k, s in enumerate(shapes) if arr.shape == s]
        inside = [
            k
            for k, s in enumerate(shapes)
            if k not in exact and arr.shape[0] <= s[0] and arr.shape[1] <= s[1]
        ]
        stride = _stride(arr)
        sub = arr[:: 2**stride, :: 2**stride]
        for k in exact + inside:
            z = which_plane(sub, level=k + stride)
            if z is not None:
                return (z, k)
        return None

    return identify


def constant_plane(data: Any) -> int | None:
    """For a volume whose plane ``z`` is constant ``z``: which plane ``data`` is."""
    arr = _as_2d(data)
    if arr is None:
        return None
    step = 2 ** _stride(arr)
    grid = arr[::step, ::step]
    first = grid.flat[0]
    if not np.isfinite(first) or first != int(first) or not np.all(grid == first):
        return None
    return int(first)


def constant_volume(shape: tuple[int, int, int], dtype: Any = np.float32) -> np.ndarray:
    data = np.empty(shape, dtype=dtype)
    for z in range(shape[0]):
        data[z] = z
    return data


def pattern_volume(shape: tuple[int, int, int]) -> np.ndarray:
    """An in-memory uint16 volume with the sample data's recognisable planes."""
    from napari_async_slicing.testing import expected_plane

    base = expected_plane(shape, 0)
    data = np.empty(shape, dtype=np.uint16)
    for z in range(shape[0]):
        np.add(base, np.uint16(64 * z), out=data[z])
    return data


# -- heartbeat -------------------------------------------------------------------------------------


class Heartbeat:
    """A main-thread QTimer that records the time of every tick; gaps are what froze the UI.

    With ``clocks`` each tick also records the main thread's CPU and its wait for a CPU so far
    (``split``: what a gap was made of)."""

    def __init__(self, interval_ms: int = 3, clocks: bool = False) -> None:
        from qtpy.QtCore import Qt, QTimer

        self.interval_ms = interval_ms
        self.beats: list[float] = []
        #: ``clocks``: (main-thread CPU, wait for a CPU) at each of ``beats``.
        self.clocks: list[tuple[float, float]] | None = [] if clocks else None
        self.last = now()
        self.hooks: list[Callable[[float], None]] = []
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._beat)

    def start(self) -> Heartbeat:
        self.last = now()
        self._record(self.last)
        self._timer.start(self.interval_ms)
        return self

    def _record(self, t: float) -> None:
        self.beats.append(t)
        if self.clocks is not None:
            self.clocks.append((time.thread_time(), ready_wait()))

    def stop(self) -> None:
        self._timer.stop()

    def _beat(self) -> None:
        t = now()
        self.last = t
        self._record(t)
        for hook in self.hooks:
            hook(t)

    def gaps(self, t0: float, t1: float) -> list[tuple[float, float]]:
        """``(end_time, gap_seconds)`` for every gap that ends within ``[t0, t1]``.

        A gap that ends after ``t1`` but began before it is included too (the freeze happened in
        the window); so is the gap up to "now" if the main thread has not beaten since.
        """
        beats = self.beats
        out = []
        prev = None
        for t in beats:
            if prev is not None and t >= t0 and (t <= t1 or prev < t1):
                out.append((t, t - prev))
            prev = t
            if t > t1:
                break
        return out

    def split(self, end: float) -> tuple[float, float] | None:
        """The main thread's CPU and wait for a CPU (seconds) over the gap that ended with the
        tick at ``end``; None without ``clocks``. The rest of the gap it was blocked: for the GIL
        (each return from Qt into Python takes it), a lock or a system call, or idle."""
        if self.clocks is None:
            return None
        i = bisect.bisect_left(self.beats, end)
        if not 0 < i < len(self.beats) or self.beats[i] != end:
            return None
        (c0, r0), (c1, r1) = self.clocks[i - 1], self.clocks[i]
        return c1 - c0, r1 - r0


#: Thread names of the software GL driver (Mesa's llvmpipe rasterizer and shader compiler).
_GL_THREADS = ('llvmpipe', 'python:disk$', 'lp:')


#: The groups found by name (``other`` is what is left of the readers' CPU).
_NAMED_GROUPS = tuple(group for group in READER_GROUPS if group.name != 'other')


def _threads_cpu() -> dict[str, float] | None:
    """CPU seconds so far of the process's threads by group: ``gl`` (the software GL driver) and
    the ``READER_GROUPS`` but ``other`` (Linux ``/proc``; else None). The main thread, the rest
    and threads that ended are in none of them."""
    python_names = {t.native_id: t.name for t in threading.enumerate()}
    try:
        tids = os.listdir('/proc/self/task')
    except OSError:
        return None
    out = dict.fromkeys(('gl', *(group.name for group in _NAMED_GROUPS)), 0.0)
    for tid in tids:
        try:
            with open(f'/proc/self/task/{tid}/comm') as f:
                name = f.read().strip()
            with open(f'/proc/self/task/{tid}/schedstat') as f:
                cpu = int(f.read().split()[0]) / 1e9  # nanoseconds on a CPU
        except (OSError, IndexError, ValueError):  # the thread ended
            continue
        if name.startswith(_GL_THREADS):
            group = 'gl'
        else:
            python_name = python_names.get(int(tid), '')
            group = next(
                (
                    g.name
                    for g in _NAMED_GROUPS
                    if python_name.startswith(g.python_prefixes) or name.startswith(g.os_prefixes)
                ),
                'other',
            )
        if group != 'other':
            out[group] += cpu
    return out


def ready_wait() -> float:
    """Seconds the calling thread has waited, runnable, for a CPU (Linux ``schedstat``; else 0).

    Of an event's wall time, what is neither its CPU nor this was spent blocked: waiting for the
    GIL, a lock or a system call."""
    try:
        with open('/proc/thread-self/schedstat') as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class CpuSplit:
    """The process's CPU over an interval, split: all threads, the main thread (call on it), and
    the software GL driver's threads; what is left is the reads' (IO loop, decoding, workers),
    itself split by thread (``READER_GROUPS``; the rest, ``other``, includes threads that ended)."""

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, dict[str, float] | None]:
        return time.process_time(), time.thread_time(), _threads_cpu()

    def since(self) -> dict[str, float]:
        """``{'process': s, 'reader': s, <group name>: s, ...}`` since this was made (the
        reader's figures are NaN without ``/proc``)."""
        end = self._sample()
        process = end[0] - self._start[0]
        main = end[1] - self._start[1]
        start, stop = self._start[2], end[2]
        if start is None or stop is None:
            nan = float('nan')
            return {'process': process, 'reader': nan, **{g.name: nan for g in READER_GROUPS}}
        reader = process - main - (stop['gl'] - start['gl'])
        split = {g.name: max(0.0, stop[g.name] - start[g.name]) for g in _NAMED_GROUPS}
        split['other'] = max(0.0, reader - sum(split.values()))
        return {'process': process, 'reader': reader, **split}


class PaintMeter:
    """Times every paint the main thread does: each ``Paint`` and ``UpdateRequest`` event, app-wide
    (the canvas's GL paint, the window's composition and its widgets), as ``(start, end, cpu)``.

    On software OpenGL one repaint blocks the main thread for tens of milliseconds, on a GPU about
    one: gaps with these intervals taken out show the main thread's own work. An application event
    filter delivers each such event itself, between two clocks; paints nested in another count
    once. With ``trace`` it times every other event delivered outside a paint as well
    (``events``: start, end, CPU, run-queue wait, what), which says what a gap is made of
    (``gap_trace``). With ``drop`` it delivers no paint at all (nothing is drawn; bench
    ``--no-paint``).
    """

    def __init__(self, trace: bool = False, drop: bool = False) -> None:
        from qtpy.QtCore import QEvent, QObject
        from qtpy.QtWidgets import QApplication

        kinds = {QEvent.Type.Paint, QEvent.Type.UpdateRequest}
        meter = self
        self.intervals: list[tuple[float, float, float]] = []
        self.trace = trace
        #: ``trace``: (start, end, main-thread CPU seconds, seconds waiting for a CPU, what) of
        #: every other event.
        self.events: list[tuple[float, float, float, float, str]] = []
        self._depth = 0
        self._passing = False

        def deliver(obj: Any, event: Any) -> tuple[float, float, float]:
            """Send ``event`` on as Qt would next (PyQt allows no ``obj.event`` on Qt's own
            objects); its start, end and main-thread CPU seconds."""
            t0, c0 = now(), time.thread_time()
            try:
                meter._passing = True
                QApplication.sendEvent(obj, event)
            finally:
                meter._passing = False
            return t0, now(), time.thread_time() - c0

        class _Filter(QObject):
            def eventFilter(self, obj: Any, event: Any) -> bool:
                if meter._passing:  # the event this filter itself sends on (``deliver``)
                    meter._passing = False
                    return False
                if event.type() not in kinds:
                    if not meter.trace or meter._depth:
                        return False
                    r0 = ready_wait()
                    t0, t1, cpu = deliver(obj, event)
                    meter.events.append((t0, t1, cpu, ready_wait() - r0, _event_name(obj, event)))
                    return True
                if drop:  # nothing is painted
                    return True
                meter._depth += 1
                try:
                    interval = deliver(obj, event)
                finally:
                    meter._depth -= 1
                if not meter._depth:
                    meter.intervals.append(interval)
                return True

        self._filter = _Filter()
        app = QApplication.instance()
        assert app is not None
        self._app = app
        self._app.installEventFilter(self._filter)

    def stop(self) -> None:
        self._app.removeEventFilter(self._filter)

    def painting(self) -> bool:
        """Whether the main thread is inside a paint event now (any thread may ask)."""
        return self._depth > 0

    def within(self, t0: float, t1: float) -> list[tuple[float, float, float]]:
        return [iv for iv in self.intervals if iv[1] > t0 and iv[0] < t1]

    def overlap(self, t0: float, t1: float) -> float:
        """Seconds of ``[t0, t1]`` spent painting."""
        return sum(min(t1, b) - max(t0, a) for a, b, _ in self.within(t0, t1))

    def cpu(self, t0: float, t1: float) -> float:
        """Main-thread CPU seconds of the paints that began within ``[t0, t1]``."""
        return sum(c for a, _, c in self.intervals if t0 <= a <= t1)

    def count(self, t0: float, t1: float) -> int:
        """How many paints began within ``[t0, t1]``."""
        return sum(1 for a, _, _ in self.intervals if t0 <= a <= t1)

    def without_paint(self, gaps: list[tuple[float, float]]) -> list[tuple[float, float]]:
        """Heartbeat ``gaps`` (end, seconds) less the time spent painting inside each."""
        return [(t, max(0.0, g - self.overlap(t - g, t))) for t, g in gaps]


_EVENT_TYPES: dict[int, str] = {}


def _event_name(obj: Any, event: Any) -> str:
    """``Receiver EventType``, or ``Receiver function`` for a call posted as an event (ours)."""
    from qtpy.QtCore import QEvent

    fn = getattr(event, 'fn', None)
    if fn is not None:
        return f'{type(obj).__name__} {getattr(fn, "__qualname__", fn)}'
    if not _EVENT_TYPES:
        for owner in (QEvent, getattr(QEvent, 'Type', QEvent)):
            for name in dir(owner):
                value = getattr(owner, name, None)
                if isinstance(value, QEvent.Type):
                    _EVENT_TYPES.setdefault(int(getattr(value, 'value', value)), name)
    kind = event.type()
    kind = int(getattr(kind, 'value', kind))
    return f'{type(obj).__name__} {_EVENT_TYPES.get(kind, kind)}'


def tally(
    table: dict[str, list[float]],
    name: str,
    count: float,
    wall_ms: float,
    cpu_ms: float,
    ready_ms: float,
    longest_ms: float,
) -> None:
    """Add to ``table[name]``: events, wall ms, CPU ms, ms waiting for a CPU, the longest event's ms."""
    row = table.setdefault(name, [0, 0.0, 0.0, 0.0, 0.0])
    row[0] += count
    row[1] += wall_ms
    row[2] += cpu_ms
    row[3] += ready_ms
    row[4] = max(row[4], longest_ms)


def gap_trace(
    meter: PaintMeter,
    gaps: list[tuple[float, float]],
    gaps_ex_paint: list[tuple[float, float]],
    t0: float,
    t1: float,
    heartbeat: Heartbeat | None = None,
) -> dict[str, Any]:
    """What the longest of ``gaps_ex_paint`` (heartbeat gaps less paint, ``(end, seconds)``) was
    made of, event by event (start and wall ms, CPU ms, ms waiting for a CPU; None for a paint),
    and every event delivered in ``[t0, t1]`` by what it was (count, wall ms, CPU ms, ms waiting
    for a CPU, longest). Wall time that is neither CPU nor waiting for a CPU the main thread spent
    blocked (for the GIL, a lock, a system call). With ``heartbeat``'s clocks, the whole gap's
    main-thread CPU and wait for a CPU too. Forgets the events that ended before ``t1``."""
    end, ex = max(gaps_ex_paint, key=lambda gap: gap[1])
    start = end - dict(gaps).get(end, ex)
    by_event: dict[str, list[float]] = {}
    for a, b, cpu, ready, name in meter.events:
        if b > t0 and a < t1:
            tally(by_event, name, 1, (b - a) * 1000, cpu * 1000, ready * 1000, (b - a) * 1000)
    inside = [
        ((a - start) * 1000, (b - a) * 1000, cpu * 1000, ready * 1000, name)
        for a, b, cpu, ready, name in meter.events
        if b > start and a < end
    ]
    paints = [
        ((a - start) * 1000, (b - a) * 1000, c * 1000, None, 'paint') for a, b, c in meter.within(start, end)
    ]
    meter.events = [e for e in meter.events if e[1] > t1]
    split = heartbeat.split(end) if heartbeat is not None else None
    return {
        'gap_ms': ex * 1000,
        'raw_ms': (end - start) * 1000,
        'split_ms': None if split is None else [v * 1000 for v in split],
        'events': sorted(inside + paints),
        'by_event': by_event,
    }


def run_until_quiet(
    heartbeat: Heartbeat, quiet: float = 0.2, max_gap: float = 0.012, timeout: float = 3.0
) -> bool:
    """Run the event loop until the main thread had no gap above ``max_gap`` for ``quiet`` s."""
    start = now()

    def calm() -> bool:
        t = now()
        if t - start < quiet:
            return False
        return all(g <= max_gap for _, g in heartbeat.gaps(t - quiet, t))

    return run_until(calm, timeout, poll_ms=10)


def gap_stats(gaps: list[tuple[float, float]], frame_s: float = 0.016) -> dict[str, float]:
    values = [g for _, g in gaps] or [0.0]
    return {
        'max_gap_ms': max(values) * 1000,
        'stall_ms': sum(g - frame_s for g in values if g > frame_s) * 1000,
        'gaps_over_16ms': float(sum(1 for g in values if g > frame_s)),
        'gaps_over_8ms': float(sum(1 for g in values if g > frame_s / 2)),
    }


# -- what vispy holds ------------------------------------------------------------------------------


class PlaneWatch:
    """Records every plane handed to the vispy node of ``layer`` (time, plane).

    Two observers, deduplicated by the identity of the node's data array: a listener on
    ``layer.events.set_data`` connected last (so it runs after napari's vispy layer updated the
    node), and a heartbeat hook that notices any other way the node's data changed.
    """

    def __init__(
        self,
        viewer: Any,
        layer: Any,
        identify: Callable[[Any], Any],
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.viewer = viewer
        self.layer = layer
        self.identify = identify
        self.records: list[tuple[float, Any]] = []
        self._last_id: int | None = None
        self._last_obj: Any = None
        layer.events.set_data.connect(self._on_set_data, position='last')
        if heartbeat is not None:
            heartbeat.hooks.append(self._poll)
        self._poll(now())

    def node_data(self) -> Any:
        from napari_async_slicing._napari_compat import vispy_node

        return vispy_node(self.viewer, self.layer)._data

    def _on_set_data(self, event: Any = None) -> None:
        self._poll(now())

    def _poll(self, t: float) -> None:
        try:
            data = self.node_data()
        except (KeyError, AttributeError):
            return
        if data is None or data is self._last_obj:
            return
        self._last_obj = data
        plane = self.identify(data)
        self.records.append((t, plane))

    @property
    def current(self) -> Any:
        return self.records[-1][1] if self.records else None

    def first_time_at_or_after(self, plane: Any, t0: float, order: list[int] | None = None) -> float | None:
        """First time after ``t0`` vispy held ``plane`` (or, with ``order``, any later plane in it)."""
        accept = {plane}
        if order is not None and plane in order:
            accept = set(order[order.index(plane) :])
        for t, p in self.records:
            if t >= t0 and p in accept:
                return t
        return None

    def first_time_matching(self, match: Callable[..., Any], t0: float) -> float | None:
        """First time after ``t0`` vispy held something ``match(identified)`` accepts."""
        for t, p in self.records:
            if t >= t0 and match(p):
                return t
        return None

    def full_check(self, plane: int, exact: Callable[[Any], int | None]) -> bool:
        """Check the whole node array (not just the subgrid) is ``plane``."""
        try:
            return exact(self.node_data()) == plane
        except (KeyError, AttributeError):
            return False

    def disconnect(self) -> None:
        try:
            self.layer.events.set_data.disconnect(self._on_set_data)
        except Exception:  # noqa: BLE001 - the layer may already be gone
            pass


def exact_pattern_plane(data: Any) -> int | None:
    arr = _as_2d(data)
    return None if arr is None else which_plane(arr)


# -- other threads' Python -----------------------------------------------------------------------


class Spinner(threading.Thread):
    """A thread that runs pure Python for ``busy`` seconds of every ``period`` until :meth:`halt`:
    what reads that schedule and decode in Python cost the main thread, with no read at all (that
    waits for the GIL at every event and after every call into C that gave the GIL up)."""

    def __init__(self, busy: float, period: float) -> None:
        super().__init__(name='bench-spinner', daemon=True)
        self.busy, self.period = busy, period
        self.cpu = 0.0  # seconds of CPU it ran, once halted
        self._halted = threading.Event()

    def run(self) -> None:
        c0 = time.thread_time()
        while not self._halted.is_set():
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < self.busy:
                pass
            self._halted.wait(max(0.0, self.period - self.busy))
        self.cpu = time.thread_time() - c0

    def halt(self) -> None:
        self._halted.set()
        self.join(5.0)


# -- stall sampler ---------------------------------------------------------------------------------


class StallSampler(threading.Thread):
    """While the main thread has not beaten for ``threshold`` seconds, sample its Python stack.

    Only active between :meth:`arm` and :meth:`disarm`. The result says where main-thread stalls
    are spent: per function, inclusive sample counts, the most frequent stacks, and the longest
    stalls sample by sample (what one long freeze was made of).
    """

    #: How many of the longest stalls are kept, and the frames (innermost first) shown per sample.
    LONGEST = 3
    FRAMES_PER_SAMPLE = 4

    def __init__(
        self,
        heartbeat: Heartbeat,
        threshold: float = 0.010,
        period: float = 0.002,
        painting: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(name='bench-stall-sampler', daemon=True)
        self.heartbeat = heartbeat
        #: Whether the main thread is painting now: such samples are counted, not profiled (the
        #: profile is of the gaps with paint taken out).
        self.painting = painting or (lambda: False)
        self.samples_in_paint = 0
        self.threshold = threshold
        self.period = period
        self.main_id = threading.main_thread().ident
        self.samples = 0
        self.inclusive: collections.Counter[str] = collections.Counter()
        self.innermost: collections.Counter[str] = collections.Counter()
        self.stacks: collections.Counter[tuple[str, ...]] = collections.Counter()
        self.others: collections.Counter[str] = collections.Counter()
        #: The stall being sampled (the heartbeat it follows, samples) and the longest ones,
        #: as (duration in ms, [(ms into the stall, frames)]).
        self._stall: tuple[float, list[tuple[float, tuple[str, ...]]]] | None = None
        self.longest: list[tuple[float, list[tuple[float, tuple[str, ...]]]]] = []
        self._armed = threading.Event()
        self._stopping = threading.Event()

    IN_QT = '[no Python frame: Qt C++ (paint, layout, X11) or waiting for the GIL]'
    _LOOP_FRAMES = ('_bench/_probe.py:run_for', '_bench/_probe.py:run_until')

    def arm(self) -> None:
        self._armed.set()

    def disarm(self) -> None:
        self._armed.clear()

    def stop(self) -> None:
        self._stopping.set()

    @staticmethod
    def _frame_name(frame: Any) -> str:
        code = frame.f_code
        path = code.co_filename
        for marker in ('site-packages' + os.sep, 'src' + os.sep, 'lib' + os.sep):
            if marker in path:
                path = path.rsplit(marker, 1)[1]
                break
        return f'{path}:{code.co_name}'

    def run(self) -> None:
        while not self._stopping.wait(self.period):
            last = self.heartbeat.last
            if not self._armed.is_set() or now() - last < self.threshold:
                self._end_stall(last)
                continue
            if self.painting():
                self.samples_in_paint += 1
                continue
            frames = sys._current_frames()
            frame = frames.get(self.main_id) if self.main_id is not None else None
            if frame is None:
                continue
            names = []
            while frame is not None:
                names.append(self._frame_name(frame))
                frame = frame.f_back
            if names[0].endswith(self._LOOP_FRAMES):
                # No Python frame above our event loop: Qt's C++ (painting, layout, X11) or the
                # main thread waiting for the GIL. Note what the other threads were running.
                names.insert(0, self.IN_QT)
                me = threading.get_ident()
                for ident, other in frames.items():
                    if ident not in (self.main_id, me):
                        self.others[self._frame_name(other)] += 1
            self.samples += 1
            self.innermost[names[0]] += 1
            for name in set(names):
                self.inclusive[name] += 1
            self.stacks[tuple(names[:12])] += 1
            if self._stall is None or self._stall[0] != last:
                self._end_stall(last)
                self._stall = (last, [])
            self._stall[1].append(((now() - last) * 1000, tuple(names[: self.FRAMES_PER_SAMPLE])))

    def _end_stall(self, last: float) -> None:
        """The main thread beat again (at ``last``): keep the stall if it is among the longest."""
        if self._stall is None or self._stall[0] == last:
            return
        start, samples = self._stall
        self._stall = None
        duration = (last - start) * 1000 if last > start else samples[-1][0]
        self.longest.append((duration, samples))
        self.longest.sort(key=lambda stall: -stall[0])
        del self.longest[self.LONGEST :]

    def summary(self, top: int = 25) -> dict[str, Any]:
        return {
            'samples': self.samples,
            'samples_in_paint': self.samples_in_paint,
            'period_ms': self.period * 1000,
            'threshold_ms': self.threshold * 1000,
            'inclusive': self.inclusive.most_common(top),
            'innermost': self.innermost.most_common(top),
            'stacks': [[list(s), n] for s, n in self.stacks.most_common(8)],
            'other_threads_when_in_qt': self.others.most_common(top),
            'longest': [[ms, [[at, list(frames)] for at, frames in samples]] for ms, samples in self.longest],
        }
