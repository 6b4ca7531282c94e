"""The scenarios, run inside one mode's process on a real, shown napari viewer.

Each function takes the spec, builds a fresh viewer, measures, closes the viewer and returns
``(metrics, extra)``: ``metrics`` are the table's numbers, ``extra`` holds timelines and windows.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from napari_async_slicing._bench._config import READER_CPU_KEYS, READER_GROUPS, BenchSpec
from napari_async_slicing._bench._probe import (
    CpuSplit,
    Heartbeat,
    PaintMeter,
    PlaneWatch,
    Spinner,
    StallSampler,
    constant_plane,
    constant_volume,
    exact_pattern_plane,
    gap_stats,
    gap_trace,
    level_plane_identifier,
    now,
    pattern_plane,
    pattern_volume,
    run_for,
    run_until,
    run_until_quiet,
)


class ScenarioTimeout(RuntimeError):
    pass


class Context:
    """Per-process state shared by the scenarios (data built once, the heartbeat, the sampler)."""

    def __init__(self, spec: BenchSpec) -> None:
        self.spec = spec
        self.heartbeat = Heartbeat(spec.heartbeat_ms, clocks=spec.trace_gaps).start()
        self.paint = PaintMeter(trace=spec.trace_gaps, drop=spec.no_paint)
        if spec.no_paint:  # no frame is ever shown: our frame-paced applies follow a 60 Hz clock
            from napari_async_slicing._qt import _main_thread

            _main_thread.FRAME_FALLBACK_S = 1 / 60
        #: ``gap_trace`` of each scrub of the running repetition (``spec.trace_gaps``).
        self.gap_traces: list[dict[str, Any]] = []
        self.sampler: StallSampler | None = None
        if spec.profile_gaps:
            self.sampler = StallSampler(self.heartbeat, painting=self.paint.painting)
            self.sampler.start()
        self.viewer: Any = None
        #: ``spec.spin``'s thread: from a repetition's first scrub to its end (``stop_spinning``).
        self.spinner: Spinner | None = None
        #: What tensorstore read in the last viewer (ours reading with it; else None).
        self.engine_stats: dict[str, int] | None = None
        self._memory: Any = None
        self._mixed: Any = None

    @property
    def memory_volume(self) -> Any:
        if self._memory is None:
            self._memory = pattern_volume(self.spec.memory_shape)
        return self._memory

    @property
    def mixed_volume(self) -> Any:
        if self._mixed is None:
            self._mixed = constant_volume(self.spec.mixed_shape)
        return self._mixed

    def close_viewer(self) -> None:
        if self.viewer is not None:
            self.viewer.close()
            self.viewer = None
            run_for(0.05)

    def spin(self) -> None:
        """Start ``spec.spin``'s thread, if asked for and not running."""
        if self.spec.spin and self.spinner is None:
            busy, period = self.spec.spin
            self.spinner = Spinner(busy / 1000, period / 1000)
            self.spinner.start()

    def stop_spinning(self) -> None:
        if self.spinner is not None:
            self.spinner.halt()
            self.spinner = None

    def close(self) -> None:
        self.stop_spinning()
        self.close_viewer()
        self.heartbeat.stop()
        self.paint.stop()
        if self.sampler is not None:
            self.sampler.stop()


@contextmanager
def _viewer(ctx: Context) -> Iterator[Any]:
    """The process's viewer (or a fresh one with ``spec.fresh_viewer``), emptied afterwards."""
    import napari

    spec = ctx.spec
    if ctx.viewer is None:
        ctx.viewer = napari.Viewer(show=True, title='napari-async-slicing bench')
        try:
            ctx.viewer.window.resize(*spec.window_size)
        except Exception:  # noqa: BLE001 - size is cosmetic
            pass
    viewer = ctx.viewer
    try:
        yield viewer
    finally:
        stats = getattr(getattr(viewer, '_layer_slicer', None), 'cache_stats', None)
        ctx.engine_stats = stats().get('tensorstore') if stats is not None else None
        if spec.fresh_viewer:
            ctx.close_viewer()
        else:
            viewer.layers.clear()
            run_for(0.05)


def _remote_layer(viewer: Any, spec: BenchSpec, scenario: str) -> Any:
    from napari_async_slicing.testing import open_remote_array

    array = open_remote_array(spec.volume_url, store=spec.store)  # type: ignore[arg-type]
    return viewer.add_image(array, name=f'{scenario} remote', contrast_limits=(0, 65535))


def _steps(nz: int, count: int) -> list[int]:
    """``count`` distinct planes after plane 0, evenly spread like a slider drag."""
    count = min(count, nz - 1)
    stride = max(1, (nz - 1) // count)
    return [min(nz - 1, (i + 1) * stride) for i in range(count)]


def _settle(ctx: Context, watch: PlaneWatch, plane: int, what: str) -> None:
    if not run_until(lambda: watch.current == plane, ctx.spec.scenario_timeout_s / 2):
        raise ScenarioTimeout(f'{what}: vispy never showed the initial plane {plane} (shows {watch.current})')
    # A new window paints and lays itself out for a while: start once the main thread is calm.
    run_until_quiet(ctx.heartbeat)


class Scrub(list):
    """The time each step of a scrub was set, and the main-thread CPU its handler took (napari's
    dims handling and the slicer's submit: ``thread_time`` around ``set_current_step``)."""

    def __init__(self) -> None:
        super().__init__()
        self.step_cpu: list[float] = []
        self.cpu_start = time.thread_time()
        self.cpu_split = CpuSplit()


def _scrub(ctx: Context, viewer: Any, steps: list[int], interval_ms: int) -> Scrub:
    """Drive ``steps`` from a repeating QTimer; return the time each step was set."""
    from qtpy.QtCore import Qt, QTimer

    times = Scrub()
    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)

    def tick() -> None:
        i = len(times)
        if i >= len(steps):
            timer.stop()
            return
        times.append(now())
        cpu = time.thread_time()
        viewer.dims.set_current_step(0, steps[i])
        times.step_cpu.append(time.thread_time() - cpu)
        if len(times) == len(steps):
            timer.stop()

    timer.timeout.connect(tick)
    ctx.spin()
    tick()
    timer.start(interval_ms)
    deadline = ctx.spec.scenario_timeout_s / 2
    if not run_until(lambda: len(times) == len(steps), deadline):
        timer.stop()
        raise ScenarioTimeout(f'scrub did not finish ({len(times)}/{len(steps)} steps)')
    return times


def _main_thread(ctx: Context, times: Scrub, t_end: float) -> dict[str, float]:
    """Main-thread figures of a scrub with the paint taken out (see ``PaintMeter``): gaps, and
    CPU per step outside paint (the step handlers, the drains that apply responses, and the
    rest of the main thread's Python until ``t_end``, paint excluded)."""
    raw = ctx.heartbeat.gaps(times[0], t_end)
    ex_paint = ctx.paint.without_paint(raw)
    gaps = gap_stats(ex_paint)
    if ctx.paint.trace and ex_paint:
        ctx.gap_traces.append(gap_trace(ctx.paint, raw, ex_paint, times[0], t_end, ctx.heartbeat))
    cpu = time.thread_time() - times.cpu_start - ctx.paint.cpu(times[0], now())
    split = times.cpu_split.since()
    return {
        'process_cpu_ms': split['process'] * 1000,
        'reader_cpu_ms': split['reader'] * 1000,
        **{group.key: split[group.name] * 1000 for group in READER_GROUPS},
        'max_gap_ex_paint_ms': gaps['max_gap_ms'],
        'stall_ex_paint_ms': gaps['stall_ms'],
        'gaps_over_8ms_ex_paint': gaps['gaps_over_8ms'],
        'step_cpu_ms': statistics.median(times.step_cpu) * 1000,
        'step_cpu_max_ms': max(times.step_cpu) * 1000,
        'main_cpu_per_step_ms': cpu / len(times) * 1000,
        'paints': float(ctx.paint.count(times[0], t_end)),
        'paint_ms': ctx.paint.overlap(times[0], t_end) * 1000,
    }


def _per_plane(main: dict[str, float], planes: int) -> dict[str, float]:
    """A scrub's process and reader CPU (``_main_thread``) per plane shown."""
    return {
        'process_cpu_per_plane_ms': main['process_cpu_ms'] / max(1, planes),
        'reader_cpu_per_plane_ms': main['reader_cpu_ms'] / max(1, planes),
    }


def _arm(ctx: Context) -> None:
    if ctx.sampler is not None:
        ctx.sampler.arm()


def _disarm(ctx: Context) -> None:
    if ctx.sampler is not None:
        ctx.sampler.disarm()


def _wait_final(ctx: Context, watch: PlaneWatch, plane: int, t_last: float, what: str) -> float:
    ok = run_until(
        lambda: watch.first_time_at_or_after(plane, t_last) is not None, ctx.spec.scenario_timeout_s / 2
    )
    if not ok:
        raise ScenarioTimeout(f'{what}: vispy never showed the final plane {plane} (shows {watch.current})')
    t = watch.first_time_at_or_after(plane, t_last)
    assert t is not None
    return t


def _since(records: list[tuple[float, int | None]], t0: float) -> list[tuple[float, int | None]]:
    """``records`` from the last one before ``t0`` on."""
    before = [i for i, (t, _) in enumerate(records) if t < t0]
    return records[before[-1] if before else 0 :]


def _timeline(
    watch: PlaneWatch, heartbeat: Heartbeat, steps: list[int], times: list[float], t0: float, t1: float
) -> dict[str, Any]:
    return {
        't0': t0,
        'steps': [[t - t0, z] for t, z in zip(times, steps, strict=True)],
        # What vispy held when the scrub began, then every change during it.
        'shown': [[max(t - t0, -0.05), p] for t, p in _since(watch.records, t0) if t <= t1],
        'gaps': [[t - t0, g * 1000] for t, g in heartbeat.gaps(t0 - 0.2, t1)],
    }


# -- S1 / S2: remote scrub -------------------------------------------------------------------------


def scenario_s1(ctx: Context) -> tuple[dict[str, float], dict[str, Any]]:
    spec = ctx.spec
    hb = ctx.heartbeat
    with _viewer(ctx) as viewer:
        layer = _remote_layer(viewer, spec, 'S1')
        watch = PlaneWatch(viewer, layer, pattern_plane, hb)
        viewer.dims.set_current_step(0, 0)
        _settle(ctx, watch, 0, 'S1')
        t_idle = now()
        run_for(0.25)
        idle = gap_stats(hb.gaps(t_idle, now()))
        steps = _steps(spec.volume_shape[0], spec.steps)
        _arm(ctx)
        times = _scrub(ctx, viewer, steps, spec.step_interval_ms)
        t_final = _wait_final(ctx, watch, steps[-1], times[-1], 'S1')
        run_for(0.1)
        _disarm(ctx)
        t_end = t_final + 0.1
        main = _main_thread(ctx, times, t_end)
        correct = watch.full_check(steps[-1], exact_pattern_plane)
        watch.disconnect()
    gaps = gap_stats(hb.gaps(times[0], t_end))
    shown = {p for t, p in watch.records if times[0] <= t <= t_end and p is not None and p != 0}
    final_ms = (t_final - times[-1]) * 1000
    # The steps come from a timer on the main thread: when it is busy they come late, as a drag
    # would. When the last step was due, had the main thread kept up:
    due = times[0] + (len(times) - 1) * spec.step_interval_ms / 1000
    metrics = {
        'max_gap_ms': gaps['max_gap_ms'],
        'stall_ms': gaps['stall_ms'],
        'planes_applied': float(len(shown)),
        'final_latency_ms': final_ms,
        'final_latency_ratio': final_ms / (spec.latency * 1000) if spec.latency > 0 else float('nan'),
        'scrub_lag_ms': max(0.0, times[-1] - due) * 1000,
        'final_after_due_ms': (t_final - due) * 1000,
        **main,
        **_per_plane(main, len(shown)),
        'idle_max_gap_ms': idle['max_gap_ms'],
    }
    extra = {
        'window': [times[0], t_end],  # perf_counter; the runner counts HTTP requests in it
        'final_plane_correct': correct,
        'older_after_newer': _older_after_newer(watch, steps, times[0], t_end),
        'timeline': _timeline(watch, hb, steps, times, times[0], t_end) if spec.keep_timeline else None,
    }
    return metrics, extra


def _older_after_newer(watch: PlaneWatch, steps: list[int], t0: float, t1: float) -> int:
    """How often vispy went back to a plane requested earlier than the one it showed."""
    order = {z: i for i, z in enumerate(steps)}
    best = -1
    count = 0
    for t, p in watch.records:
        if not t0 <= t <= t1 or p not in order:
            continue
        if order[p] < best:
            count += 1
        best = max(best, order[p])
    return count


def scenario_s2(ctx: Context) -> tuple[dict[str, float], dict[str, Any]]:
    spec = ctx.spec
    hb = ctx.heartbeat
    nz = min(spec.volume_shape[0], spec.mixed_shape[0])
    scale = spec.volume_shape[1] / spec.mixed_shape[1]
    with _viewer(ctx) as viewer:
        remote = _remote_layer(viewer, spec, 'S2')
        local = viewer.add_image(
            ctx.mixed_volume[:nz],
            name='S2 numpy',
            scale=(1, scale, scale),
            contrast_limits=(0, nz),
            blending='additive',
            opacity=0.5,
        )
        w_remote = PlaneWatch(viewer, remote, pattern_plane, hb)
        w_local = PlaneWatch(viewer, local, constant_plane, hb)
        viewer.dims.set_current_step(0, 0)
        _settle(ctx, w_remote, 0, 'S2 remote')
        _settle(ctx, w_local, 0, 'S2 numpy')
        steps = _steps(nz, spec.steps)
        _arm(ctx)
        times = _scrub(ctx, viewer, steps, spec.step_interval_ms)
        t_final = _wait_final(ctx, w_remote, steps[-1], times[-1], 'S2 remote')
        _wait_final(ctx, w_local, steps[-1], times[-1], 'S2 numpy')
        run_for(0.1)
        _disarm(ctx)
        t_end = max(t_final, w_local.records[-1][0]) + 0.1
        main = _main_thread(ctx, times, t_end)
        w_remote.disconnect()
        w_local.disconnect()
    # Time until the numpy layer shows step i, or a newer step (an older step may be superseded).
    lat = []
    for z, t in zip(steps, times, strict=True):
        shown = w_local.first_time_at_or_after(z, t, order=steps)
        lat.append((shown - t) * 1000 if shown is not None else float('nan'))
    valid = [v for v in lat if v == v]
    shown_steps = {p for t, p in w_local.records if times[0] <= t <= t_end and p in set(steps)}
    gaps = gap_stats(hb.gaps(times[0], t_end))
    metrics = {
        'numpy_median_ms': statistics.median(valid) if valid else float('nan'),
        'numpy_max_ms': max(valid) if valid else float('nan'),
        'numpy_steps_shown': float(len(shown_steps)),
        'remote_final_latency_ms': (t_final - times[-1]) * 1000,
        'max_gap_ms': gaps['max_gap_ms'],
        **main,
    }
    extra = {'window': [times[0], t_end], 'numpy_latency_ms': lat}
    return metrics, extra


# -- S4 / S5: in-memory ----------------------------------------------------------------------------


def _memory_layer(ctx: Context, viewer: Any, scenario: str) -> tuple[Any, PlaneWatch]:
    layer = viewer.add_image(ctx.memory_volume, name=f'{scenario} memory', contrast_limits=(0, 65535))
    watch = PlaneWatch(viewer, layer, pattern_plane, ctx.heartbeat)
    viewer.dims.set_current_step(0, 0)
    _settle(ctx, watch, 0, 'in-memory')
    return layer, watch


def scenario_s4(ctx: Context) -> tuple[dict[str, float], dict[str, Any]]:
    spec = ctx.spec
    nz = spec.memory_shape[0]
    lat = []
    with _viewer(ctx) as viewer:
        _, watch = _memory_layer(ctx, viewer, 'S4')
        current = 0
        for i in range(spec.single_steps):
            z = (current + 1 + (i * 7) % (nz - 1)) % nz
            if z == current:
                z = (z + 1) % nz
            t = now()
            viewer.dims.set_current_step(0, z)
            if not run_until(
                lambda z=z, t=t: watch.first_time_at_or_after(z, t) is not None,
                spec.scenario_timeout_s / 4,
                poll_ms=1,
            ):
                raise ScenarioTimeout(f'S4: plane {z} never shown')
            shown = watch.first_time_at_or_after(z, t)
            assert shown is not None
            lat.append((shown - t) * 1000)
            current = z
            run_for(0.03)  # let the canvas paint between steps
        watch.disconnect()
    metrics = {'latency_median_ms': statistics.median(lat), 'latency_max_ms': max(lat)}
    return metrics, {'latency_ms': lat}


def scenario_s5(ctx: Context) -> tuple[dict[str, float], dict[str, Any]]:
    spec = ctx.spec
    hb = ctx.heartbeat
    nz = spec.memory_shape[0]
    with _viewer(ctx) as viewer:
        _, watch = _memory_layer(ctx, viewer, 'S5')
        steps = _steps(nz, 25)
        interval = max(1, 1000 // len(steps))  # 25 requests within 1 s
        _arm(ctx)
        times = _scrub(ctx, viewer, steps, interval)
        t_final = _wait_final(ctx, watch, steps[-1], times[-1], 'S5')
        run_for(0.1)
        _disarm(ctx)
        watch.disconnect()
    gaps = gap_stats(hb.gaps(times[0], t_final + 0.1))
    metrics = {'last_latency_ms': (t_final - times[-1]) * 1000, 'max_gap_ms': gaps['max_gap_ms']}
    return metrics, {'steps': len(steps), 'interval_ms': interval}


# -- S8: dask multiscale, as napari-ome-zarr hands it ----------------------------------------------


def _s8_scrubs(nz: int, count: int) -> tuple[list[int], list[int]]:
    """Two scrubs over planes not shown before (plane 0 is shown first): odd planes upwards, then
    even planes downwards, each at most ``count`` steps."""
    return list(range(1, nz, 2))[:count], list(range(nz - 2 + nz % 2, 0, -2))[:count]


def _forget_dask_cache() -> None:
    """Empty napari's dask cache (process-wide, kept across viewers): each repetition's planes
    are new to every mode, not only to a mode whose cache goes with its viewer."""
    from napari.utils import resize_dask_cache

    size = resize_dask_cache().cache.available_bytes
    resize_dask_cache(1)  # evicts everything
    resize_dask_cache(size)


def scenario_s8(ctx: Context) -> tuple[dict[str, float], dict[str, Any]]:
    """The S3 OME-Zarr opened as napari-ome-zarr opens it (``dask.array.from_zarr`` per level, the
    three finest levels), two scrubs over new planes: S1's figures for each."""
    import dask.array as da

    from napari_async_slicing._io import open_image

    spec = ctx.spec
    deadline = _Deadline(spec.timeout_for('S8'))
    _forget_dask_cache()
    data, kwargs = open_image(spec.ome_url, store=spec.store)
    levels = [da.from_zarr(a) for a in (list(data) if isinstance(data, (list, tuple)) else [data])][:3]
    shapes = [(int(a.shape[-2]), int(a.shape[-1])) for a in levels]
    nz = int(levels[0].shape[0])
    scrubs: list[dict[str, Any]] = []
    with _viewer(ctx) as viewer:
        layer = viewer.add_image(
            levels,
            multiscale=len(levels) > 1,
            name='S8 dask ome',
            **{k: v for k, v in kwargs.items() if k != 'name'},
        )
        viewer.reset_view()
        watch = PlaneWatch(viewer, layer, level_plane_identifier(shapes), ctx.heartbeat)
        viewer.dims.set_current_step(0, 0)
        _settle_level(ctx, layer, watch, 0, deadline, 'S8 initial plane')
        _arm(ctx)
        for steps in _s8_scrubs(nz, spec.ome_scrub_steps):
            times = _scrub(ctx, viewer, steps, spec.step_interval_ms)
            _settle_level(ctx, layer, watch, steps[-1], deadline, 'S8 final plane')
            t_final = watch.first_time_at_or_after((steps[-1], int(layer.data_level)), times[-1])
            assert t_final is not None
            t_end = t_final + 0.1
            run_until(lambda t_end=t_end: now() >= t_end, 1.0)
            due = times[0] + (len(times) - 1) * spec.step_interval_ms / 1000
            shown = {
                p[0]
                for t, p in watch.records
                if times[0] <= t <= t_end and p is not None and p[0] in set(steps)
            }
            scrubs.append(
                {
                    **gap_stats(ctx.heartbeat.gaps(times[0], t_end)),
                    **_main_thread(ctx, times, t_end),
                    'planes_applied': float(len(shown)),
                    'final_latency_ms': (t_final - times[-1]) * 1000,
                    'final_after_due_ms': (t_final - due) * 1000,
                    'scrub_lag_ms': max(0.0, times[-1] - due) * 1000,
                    'window': [times[0], t_end],
                }
            )
            _calm(ctx, layer, deadline)
        _disarm(ctx)
        watch.disconnect()
    metrics: dict[str, float] = {}
    for key in ('max_gap_ms', 'max_gap_ex_paint_ms', 'step_cpu_max_ms'):
        metrics[key] = max(r[key] for r in scrubs)
    for key in (
        'stall_ex_paint_ms',
        'gaps_over_8ms_ex_paint',
        'paints',
        'planes_applied',
        'process_cpu_ms',
        'reader_cpu_ms',
        *READER_CPU_KEYS,
    ):
        metrics[key] = sum(r[key] for r in scrubs)
    metrics.update(_per_plane(metrics, int(metrics['planes_applied'])))
    for key in ('step_cpu_ms', 'main_cpu_per_step_ms'):
        metrics[key] = statistics.mean(r[key] for r in scrubs)
    for i, r in enumerate(scrubs, 1):
        for key in ('final_latency_ms', 'final_after_due_ms', 'scrub_lag_ms'):
            metrics[f'{key}_{i}'] = r[key]
    windows = [r['window'] for r in scrubs]
    return metrics, {
        'window': [windows[0][0], windows[-1][1]],
        'scrubs': scrubs,
        'levels': shapes,
        'data_level': int(layer.data_level),
    }


# -- S3: multiscale OME-Zarr -----------------------------------------------------------------------


class _Deadline:
    """The bound on one repetition: every wait inside it takes at most what is left."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = now() + seconds

    def left(self, cap: float | None = None) -> float:
        left = max(0.0, self.end - now())
        return left if cap is None else min(left, cap)


def _calm(ctx: Context, layer: Any, deadline: _Deadline) -> None:
    """Wait (bounded) until the layer has nothing in flight and the main thread is calm."""
    run_until(lambda: bool(layer.loaded), deadline.left(ctx.spec.scenario_timeout_s / 4))
    run_until_quiet(ctx.heartbeat, quiet=0.15, timeout=deadline.left(2.0))


def _view_facts(viewer: Any, layer: Any) -> dict[str, Any]:
    """Canvas size, zoom and the data level napari picked (the same in every mode, or not fair)."""
    from napari_async_slicing._napari_compat import vispy_node

    facts: dict[str, Any] = {
        'zoom': float(viewer.camera.zoom),
        'data_level': int(layer.data_level),
        'corner_pixels': layer.corner_pixels.tolist(),
    }
    try:
        facts['canvas'] = [int(v) for v in vispy_node(viewer, layer).canvas.size]
    except Exception:  # noqa: BLE001 - facts are best effort
        pass
    return facts


def _settle_level(
    ctx: Context, layer: Any, watch: PlaneWatch, plane: int, deadline: _Deadline, what: str
) -> None:
    """Until vispy holds ``plane`` at the level napari picked, nothing is in flight for the layer
    and the main thread is calm (a newer level or response would show up as a new record)."""

    def done() -> bool:
        cur = watch.current
        return cur is not None and cur == (plane, int(layer.data_level)) and bool(layer.loaded)

    while True:
        if not run_until(done, deadline.left()):
            raise ScenarioTimeout(
                f'{what}: vispy never showed plane {plane} at level '
                f'{layer.data_level} within {deadline.seconds:.0f} s '
                f'(holds plane, level {watch.current})'
            )
        count = len(watch.records)
        run_until_quiet(ctx.heartbeat, quiet=0.2, timeout=deadline.left(3.0))
        if len(watch.records) == count and done():
            return


def _s3_step(
    ctx: Context, viewer: Any, layer: Any, watch: PlaneWatch, z: int, deadline: _Deadline
) -> dict[str, Any]:
    """One step to plane ``z``, settled: first pixels and full resolution after the step."""
    t = now()
    viewer.dims.set_current_step(0, z)
    _settle_level(ctx, layer, watch, z, deadline, f'S3 step to plane {z}')
    level = watch.current[1]
    t_first = watch.first_time_matching(lambda p, z=z: p is not None and p[0] == z, t)
    t_full = watch.first_time_at_or_after((z, level), t)
    assert t_first is not None and t_full is not None
    first_level = next(p[1] for tt, p in watch.records if tt == t_first and p is not None and p[0] == z)
    return {
        'first_ms': (t_first - t) * 1000,
        'full_ms': (t_full - t) * 1000,
        'first_level': first_level,
        'full_level': level,
        'window': [t, now()],
        'gaps': ctx.heartbeat.gaps(t, t_full + 0.05),
    }


def _emptied_cache(ctx: Context, slicer: Any, layer: Any, deadline: _Deadline) -> None:
    """Ours: let every prefetch end (bounded), then empty the chunk cache, so that the next step
    finds nothing of its plane cached — a jump beyond the coarse window read at rest."""
    run_until(lambda: slicer.prefetches_in_flight() == 0, deadline.left(10.0))
    _calm(ctx, layer, deadline)
    slicer.cache.clear()


def scenario_s3(ctx: Context) -> tuple[dict[str, float], dict[str, Any]]:
    """Steps on a remote 4-level OME-Zarr: first pixels (any level) and full resolution; then,
    for ours, as many cold jumps (its chunk cache emptied before each). napari has no cache:
    its steps are all cold, and its cold rows repeat them."""
    from napari_async_slicing._io import open_image
    from napari_async_slicing._napari_compat import layer_slicer
    from napari_async_slicing.components._layer_slicer import AsyncLayerSlicer

    spec = ctx.spec
    deadline = _Deadline(spec.timeout_for('S3'))
    data, kwargs = open_image(spec.ome_url, store=spec.store)
    levels = list(data) if isinstance(data, (list, tuple)) else [data]
    shapes = [(int(a.shape[-2]), int(a.shape[-1])) for a in levels]
    nz = int(levels[0].shape[0])
    warm: list[dict[str, Any]] = []
    cold: list[dict[str, Any]] = []
    with _viewer(ctx) as viewer:
        layer = viewer.add_image(
            levels,
            multiscale=len(levels) > 1,
            name='S3 ome',
            **{k: v for k, v in kwargs.items() if k != 'name'},
        )
        viewer.reset_view()
        watch = PlaneWatch(viewer, layer, level_plane_identifier(shapes), ctx.heartbeat)
        viewer.dims.set_current_step(0, 0)
        _settle_level(ctx, layer, watch, 0, deadline, 'S3 initial plane')
        view = _view_facts(viewer, layer)
        steps = _steps(nz, spec.ome_steps)
        slicer = layer_slicer(viewer)
        ours = isinstance(slicer, AsyncLayerSlicer) and slicer.cache.enabled
        # Back over the same planes (each differs from the one shown), cold.
        cold_steps = [*steps[-2::-1], 0] if ours else []
        _arm(ctx)
        for z in steps:
            warm.append(_s3_step(ctx, viewer, layer, watch, z, deadline))
            run_for(0.1)
        for z in cold_steps:
            _emptied_cache(ctx, slicer, layer, deadline)
            cold.append(_s3_step(ctx, viewer, layer, watch, z, deadline))
        _disarm(ctx)
        view['data_level_end'] = int(layer.data_level)
        watch.disconnect()
    first_ms = [s['first_ms'] for s in warm]
    full_ms = [s['full_ms'] for s in warm]
    cold_first = [s['first_ms'] for s in cold] or first_ms
    cold_full = [s['full_ms'] for s in cold] or full_ms
    metrics = {
        'first_pixels_ms': statistics.median(first_ms),
        'full_res_ms': statistics.median(full_ms),
        'full_res_max_ms': max(full_ms),
        'cold_first_pixels_ms': statistics.median(cold_first),
        'cold_full_res_ms': statistics.median(cold_full),
        'cold_full_res_max_ms': max(cold_full),
        'full_res_level': float(statistics.median([s['full_level'] for s in warm])),
        'max_gap_ms': gap_stats([g for s in warm + cold for g in s['gaps']])['max_gap_ms'],
    }
    extra = {
        'steps': steps,
        'first_pixels_ms': first_ms,
        'full_res_ms': full_ms,
        'first_levels': [s['first_level'] for s in warm],
        'full_levels': [s['full_level'] for s in warm],
        'level_shapes': shapes,
        'cold_steps': cold_steps,
        'cold_first_pixels_ms': cold_first,
        'cold_full_res_ms': cold_full,
        'cold_first_levels': [s['first_level'] for s in cold],
        'view': view,
        'step_windows': [s['window'] for s in warm],
    }
    return metrics, extra


# -- S6: revisit / neighbour after a pause ---------------------------------------------------------


def _s6_plan(nz: int, revisits: int, neighbours: int) -> tuple[list[tuple[int, int]], list[int]]:
    """Planes never shown before: ``(A, B)`` per revisit trial, ``P`` (then ``P + 1``) per
    neighbour trial, spread over the volume; plane 0 (shown first) and napari's initial plane
    (``nz // 2``, requested when the layer is added) are not used."""
    blocks = revisits + neighbours
    size = (nz - 2) // max(1, blocks)
    if blocks < 1 or size < 2:
        raise ValueError(f'S6 needs at least 2 planes per trial: {nz} planes, {blocks} trials')
    taken = {0, nz // 2}
    pairs: list[tuple[int, int]] = []
    nxt = 1
    for i in range(blocks):
        gap = max(1, size // 2) if i < revisits else 1
        a = max(nxt, 1 + i * size)
        while a + gap < nz and (a in taken or a + gap in taken):
            a += 1
        if a + gap >= nz:
            raise ValueError(f'S6: not enough fresh planes in {nz} for {blocks} trials')
        pairs.append((a, a + gap))
        taken.update(range(a, a + gap + 1))
        nxt = a + gap + 1
    return pairs[:revisits], [a for a, _ in pairs[revisits:]]


def scenario_s6(ctx: Context) -> tuple[dict[str, float], dict[str, Any]]:
    """(a) revisit: A, B, back to A; (b) rest on P for ``pause_s``, then P + 1."""
    spec = ctx.spec
    deadline = _Deadline(spec.timeout_for('S6'))
    revisit_pairs, neighbour_planes = _s6_plan(
        spec.volume_shape[0], spec.revisit_trials, spec.neighbour_trials
    )
    revisit: list[float] = []
    neighbour: list[float] = []
    plane_windows: list[list[float]] = []  # [set, shown, plane] of each measured step
    with _viewer(ctx) as viewer:
        layer = _remote_layer(viewer, spec, 'S6')
        watch = PlaneWatch(viewer, layer, pattern_plane, ctx.heartbeat)
        viewer.dims.set_current_step(0, 0)
        _settle(ctx, watch, 0, 'S6')
        _calm(ctx, layer, deadline)

        def show(z: int, what: str) -> tuple[float, float]:
            """Step to ``z``; return (set time, time vispy holds it)."""
            t = now()
            viewer.dims.set_current_step(0, z)
            if not run_until(
                lambda: watch.first_time_at_or_after(z, t) is not None,
                deadline.left(spec.scenario_timeout_s / 4),
                poll_ms=1,
            ):
                raise ScenarioTimeout(f'S6 {what}: vispy never showed plane {z} (holds {watch.current})')
            shown = watch.first_time_at_or_after(z, t)
            assert shown is not None
            _calm(ctx, layer, deadline)
            return t, shown

        _arm(ctx)
        for a, b in revisit_pairs:
            show(a, 'revisit A')
            show(b, 'revisit B')
            t, shown = show(a, 'back to A')
            revisit.append((shown - t) * 1000)
            plane_windows.append([t, shown, a])
        for p in neighbour_planes:
            _, shown_p = show(p, 'neighbour P')
            run_for(max(0.0, spec.pause_s - (now() - shown_p)))  # rest on P
            t, shown = show(p + 1, 'neighbour P+1')
            neighbour.append((shown - t) * 1000)
            plane_windows.append([t, shown, p + 1])
        _disarm(ctx)
        watch.disconnect()
    latency_ms = spec.latency * 1000
    rev = statistics.median(revisit)
    nb = statistics.median(neighbour)
    metrics = {
        'revisit_ms': rev,
        'neighbour_ms': nb,
        'revisit_ratio': rev / latency_ms if latency_ms > 0 else float('nan'),
        'neighbour_ratio': nb / latency_ms if latency_ms > 0 else float('nan'),
    }
    extra = {
        'revisit_pairs': revisit_pairs,
        'neighbour_planes': neighbour_planes,
        'revisit_ms': revisit,
        'neighbour_ms': neighbour,
        'pause_s': spec.pause_s,
        'plane_windows': plane_windows,  # the runner counts the plane's HTTP requests in each
    }
    return metrics, extra


# -- S7: opening remote data -----------------------------------------------------------------------


def scenario_s7(ctx: Context) -> tuple[dict[str, float], dict[str, Any]]:
    """``viewer.add_image`` of the remote volume without contrast limits, into an empty viewer.

    The reference ("floor") is napari adding an in-memory array of the same shape with limits
    given: its own layer, controls and canvas work, which no slicer can avoid.
    """
    import numpy as np

    from napari_async_slicing.testing import open_remote_array

    spec = ctx.spec
    hb = ctx.heartbeat
    nz, ny, nx = spec.volume_shape
    with _viewer(ctx) as viewer:
        floor_data = np.broadcast_to(np.zeros((1, ny, nx), np.uint16), (nz, ny, nx))
        floor_ms = 0.0
        for _ in range(2):  # the first add of a process pays one-off imports and shader builds
            t = now()
            floor_layer = viewer.add_image(floor_data, contrast_limits=(0, 1), name='S7 floor')
            floor_ms = (now() - t) * 1000
            run_until_quiet(ctx.heartbeat)
            viewer.layers.remove(floor_layer)
        array = open_remote_array(spec.volume_url, store=spec.store)  # type: ignore[arg-type]  # metadata, before timing
        run_until_quiet(ctx.heartbeat)
        _arm(ctx)
        t0 = now()
        layer = viewer.add_image(array, name='S7 remote')
        t_ret = now()
        centre = int(viewer.dims.current_step[0])
        # A layer not sliced yet holds a 1x1 placeholder: only whole planes count.
        watch = PlaneWatch(
            viewer, layer, lambda d: pattern_plane(d) if np.shape(d)[-2:] == (ny, nx) else None, hb
        )
        if not run_until(lambda: watch.current == centre and bool(layer.loaded), spec.scenario_timeout_s / 2):
            raise ScenarioTimeout(f'S7: vispy never showed plane {centre} (holds {watch.current})')
        t_first = watch.first_time_at_or_after(centre, t0)
        assert t_first is not None
        run_for(0.1)
        _disarm(ctx)
        plane = np.asarray(array[centre])
        low, high = (float(v) for v in layer.contrast_limits)
        span = float(plane.max()) - float(plane.min())
        fits = low <= plane.min() and plane.max() <= high and (high - low) <= 4 * max(span, 1.0)
        others = {p for _, p in watch.records if p is not None and p != centre}
        watch.disconnect()
    gaps = gap_stats(hb.gaps(t_ret, t_first + 0.1))
    add_ms = (t_ret - t0) * 1000
    first_ms = (t_first - t0) * 1000
    metrics = {
        'add_ms': add_ms,
        'floor_ms': floor_ms,
        'add_over_floor_ms': add_ms - floor_ms,
        'first_plane_ms': first_ms,
        'first_plane_ratio': first_ms / (spec.latency * 1000) if spec.latency > 0 else float('nan'),
        'max_gap_after_ms': gaps['max_gap_ms'],
        'other_planes_shown': float(len(others)),
        'clims_fit': 1.0 if fits else 0.0,
    }
    extra = {
        'add_window': [t0, t_ret],
        'window': [t0, t_first],
        'centre': centre,
        'contrast_limits': [low, high],
        'plane_range': [float(plane.min()), float(plane.max())],
        'shown': [[t - t0, p] for t, p in watch.records],
    }
    return metrics, extra


RUNNERS: dict[str, Callable[[Context], tuple[dict[str, float], dict[str, Any]]]] = {
    'S1': scenario_s1,
    'S2': scenario_s2,
    'S3': scenario_s3,
    'S4': scenario_s4,
    'S5': scenario_s5,
    'S6': scenario_s6,
    'S7': scenario_s7,
    'S8': scenario_s8,
}
