"""Modes, scenario parameters and the metric catalogue of the benchmark."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: The three slicing modes compared side by side, in table order.
MODES: tuple[str, ...] = ('napari-sync', 'napari-async', 'ours')
MODE_TITLES: dict[str, str] = {
    'napari-sync': 'napari sync',
    'napari-async': 'napari async',
    'ours': 'ours',
}

#: Scenarios, in table order. Ours runs with its defaults everywhere (chunk cache, prefetch,
#: progressive multiscale): S3 and S6 measure what those add over napari.
SCENARIOS: tuple[str, ...] = ('S1', 'S2', 'S3', 'S4', 'S5', 'S6', 'S7', 'S8')
#: Scenarios that read the remote single-scale volume / the remote OME-Zarr.
VOLUME_SCENARIOS: frozenset[str] = frozenset({'S1', 'S2', 'S6', 'S7'})
OME_SCENARIOS: frozenset[str] = frozenset({'S3', 'S8'})

SCENARIO_TITLES: dict[str, str] = {
    'S1': 'S1 remote scrub',
    'S2': 'S2 mixed remote + numpy',
    'S3': 'S3 multiscale OME-Zarr',
    'S4': 'S4 in-memory single slice (NAP-4 G3)',
    'S5': 'S5 25 requests in 1 s (NAP-4 G3)',
    'S6': 'S6 revisit / neighbour after pause',
    'S7': 'S7 open: add_image of the remote volume',
    'S8': 'S8 dask multiscale (napari-ome-zarr style), two scrubs over new planes',
}


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str  # 'ms', 'x', '' (count)
    lower_is_better: bool = True
    ratio: bool = True  # False: ours / theirs means nothing (a level, a setting)


#: A scrub's main-thread figures with the paint taken out (``_scenarios._main_thread``).
_MAIN_THREAD: tuple[Metric, ...] = (
    Metric('max_gap_ex_paint_ms', 'max main-thread gap, paint taken out', 'ms'),
    Metric('stall_ex_paint_ms', 'total stall over 16 ms, paint taken out', 'ms'),
    Metric('gaps_over_8ms_ex_paint', 'main-thread gaps over 8 ms, paint taken out', ''),
    Metric('step_cpu_ms', 'main-thread CPU of a step handler: median', 'ms'),
    Metric('step_cpu_max_ms', 'main-thread CPU of a step handler: max', 'ms'),
    Metric('main_cpu_per_step_ms', 'main-thread CPU per step outside paint (handlers, applies)', 'ms'),
    Metric('paints', 'reference: paints (Paint and UpdateRequest events) during the scrub', ''),
    Metric('paint_ms', 'reference: main-thread time spent painting', 'ms'),
)


@dataclass(frozen=True)
class ThreadGroup:
    """Threads outside the main one and the GL driver's whose CPU the bench reports together
    (``_probe.CpuSplit``), found by their Python or OS thread name prefixes."""

    name: str
    label: str
    python_prefixes: tuple[str, ...] = ()
    os_prefixes: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f'reader_{self.name}_cpu_ms'


#: The CPU outside the main thread and GL by thread, whole scrub; ``other`` is the rest (Qt's
#: threads, threads that ended).
READER_GROUPS: tuple[ThreadGroup, ...] = (
    ThreadGroup('io', "zarr's IO loop (HTTP, zarr's chunk pipeline, our read queue)", ('zarr_io',)),
    ThreadGroup(
        'pools',
        "thread pools (zarr's decoding, dask's tasks, napari's slicing thread)",
        ('asyncio_', 'ThreadPoolExecutor'),
    ),
    ThreadGroup('workers', 'our slicing workers', ('napari-async-slicing',)),
    ThreadGroup('tensorstore', "tensorstore's threads", os_prefixes=('ts_',)),
    ThreadGroup('status', "napari's status checker", os_prefixes=('StatusChecker',)),  # a QThread
    ThreadGroup('other', 'other threads, and threads that ended'),
)
READER_CPU_KEYS: tuple[str, ...] = tuple(group.key for group in READER_GROUPS)

#: A scrub's CPU per plane shown, from the start of the scrub until its final plane is shown
#: (``_probe.CpuSplit``): the whole process, and outside the main thread and the software GL
#: rasterizer's threads (reads: IO loop, decoding, workers; Linux only).
_PROCESS_CPU: tuple[Metric, ...] = (
    Metric('reader_cpu_ms', 'CPU outside the main thread and GL, whole scrub', 'ms'),
    *(Metric(group.key, f'  of it: {group.label}', 'ms') for group in READER_GROUPS),
    Metric('process_cpu_per_plane_ms', 'process CPU per plane shown', 'ms'),
    Metric('reader_cpu_per_plane_ms', 'CPU outside the main thread and GL per plane shown', 'ms'),
)

#: Rows of the table, per scenario, in order.
METRICS: dict[str, tuple[Metric, ...]] = {
    'S1': (
        Metric('max_gap_ms', 'max main-thread gap', 'ms'),
        Metric('stall_ms', 'total stall over 16 ms', 'ms'),
        Metric('planes_applied', 'planes applied (distinct planes vispy showed)', '', False),
        Metric('final_latency_ms', 'final-plane latency after last step', 'ms'),
        Metric('final_latency_ratio', 'final latency / request latency', 'x'),
        Metric('scrub_lag_ms', 'how late the last step was set (a busy main thread delays the drag)', 'ms'),
        Metric('final_after_due_ms', 'final plane shown after the last step was due (lag + latency)', 'ms'),
        Metric('chunk_requests', 'HTTP chunk requests', ''),
        *_MAIN_THREAD,
        *_PROCESS_CPU,
        Metric('idle_max_gap_ms', 'reference: max gap while idle before the scrub', 'ms'),
    ),
    'S2': (
        Metric('numpy_median_ms', 'numpy layer shows each step: median', 'ms'),
        Metric('numpy_max_ms', 'numpy layer shows each step: max', 'ms'),
        Metric('numpy_steps_shown', 'steps the numpy layer showed', '', False),
        Metric('remote_final_latency_ms', 'remote layer final-plane latency', 'ms'),
        Metric('max_gap_ms', 'max main-thread gap', 'ms'),
        *_MAIN_THREAD,
    ),
    'S3': (
        Metric('first_pixels_ms', 'step to first pixels of the new plane (any level): median', 'ms'),
        Metric('full_res_ms', 'step to full resolution (the data level napari picks): median', 'ms'),
        Metric('full_res_max_ms', 'step to full resolution: max', 'ms'),
        Metric('cold_first_pixels_ms', 'cold jump (nothing of the plane cached): first pixels, median', 'ms'),
        Metric('cold_full_res_ms', 'cold jump: full resolution, median', 'ms'),
        Metric('cold_full_res_max_ms', 'cold jump: full resolution, max', 'ms'),
        Metric(
            'full_res_level',
            'full-resolution level napari picks for the canvas (0 = finest)',
            '',
            False,
            ratio=False,
        ),
        Metric('chunk_requests_per_step', 'HTTP chunk requests per step: median', ''),
        Metric('max_gap_ms', 'max main-thread gap during the steps', 'ms'),
    ),
    'S4': (
        Metric('latency_median_ms', 'one step until vispy holds it: median', 'ms'),
        Metric('latency_max_ms', 'one step until vispy holds it: max', 'ms'),
    ),
    'S5': (
        Metric('last_latency_ms', 'latency of the last of 25 requests', 'ms'),
        Metric('max_gap_ms', 'max main-thread gap', 'ms'),
    ),
    'S6': (
        Metric('revisit_ms', 'revisit: A, B, back to A until vispy holds A: median', 'ms'),
        Metric('neighbour_ms', 'neighbour: rest on P for 1 s, step to P+1: median', 'ms'),
        Metric('revisit_ratio', 'revisit / request latency', 'x'),
        Metric('neighbour_ratio', 'neighbour / request latency', 'x'),
    ),
    'S7': (
        Metric('add_ms', 'add_image returns after', 'ms'),
        Metric('floor_ms', 'reference: add_image of an in-memory array of that shape', 'ms'),
        Metric('add_over_floor_ms', 'add_image beyond that reference', 'ms'),
        Metric('chunk_requests_during_add', 'HTTP chunk requests started during add_image', ''),
        Metric('first_plane_ms', 'call to the plane dims shows on screen', 'ms'),
        Metric('first_plane_ratio', 'that / request latency', 'x'),
        Metric('max_gap_after_ms', 'max main-thread gap after add_image returned', 'ms'),
        Metric('other_planes_shown', 'other planes vispy showed after it returned', ''),
        Metric('clims_fit', 'contrast limits fit the shown plane (1 = yes)', '', False, ratio=False),
    ),
    'S8': (
        Metric('max_gap_ms', 'max main-thread gap', 'ms'),
        *_MAIN_THREAD[:-1],
        *_PROCESS_CPU,
        Metric('planes_applied', 'planes shown (both scrubs)', '', False),
        Metric('chunk_requests', 'HTTP chunk requests (both scrubs)', ''),
        Metric('final_latency_ms_1', 'scrub 1: final plane after the last step', 'ms'),
        Metric('final_after_due_ms_1', 'scrub 1: final plane after the last step was due', 'ms'),
        Metric('scrub_lag_ms_1', 'scrub 1: how late the last step was set', 'ms'),
        Metric('final_latency_ms_2', 'scrub 2: final plane after the last step', 'ms'),
        Metric('final_after_due_ms_2', 'scrub 2: final plane after the last step was due', 'ms'),
        Metric('scrub_lag_ms_2', 'scrub 2: how late the last step was set', 'ms'),
    ),
}

#: Volume sizes (sample_data('volume', size)) and the in-memory sizes that go with them.
#: ``ome_size`` is the S3 OME-Zarr (sample_data('ome', ome_size)): 'small' is 32x1024x1024 in 4
#: levels (chunks 1x256x256), 'tiny' 6x128x128.
SIZES: dict[str, dict[str, Any]] = {
    'tiny': {'memory_shape': (12, 64, 64), 'mixed_shape': (12, 16, 16), 'ome_size': 'tiny'},
    'small': {'memory_shape': (50, 512, 512), 'mixed_shape': (50, 128, 128), 'ome_size': 'tiny'},
    's1': {'memory_shape': (100, 1024, 1024), 'mixed_shape': (200, 256, 256), 'ome_size': 'small'},
}


@dataclass
class BenchSpec:
    """Everything one mode's subprocess needs (JSON-serialisable)."""

    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))
    repeat: int = 3
    latency: float = 0.1  # seconds per HTTP request
    size: str = 's1'  # sample volume size for S1/S2
    volume_url: str = ''  # set by the runner (HTTP server in the parent process)
    volume_shape: tuple[int, int, int] = (200, 1024, 1024)
    store: str = 'fsspec'
    steps: int = 25  # S1/S2/S5 steps
    step_interval_ms: int = 40
    single_steps: int = 20  # S4 steps
    ome_size: str = 'small'  # S3: sample_data('ome', ome_size)
    ome_url: str = ''  # set by the runner
    ome_shape: tuple[int, int, int] = (32, 1024, 1024)  # level 0
    ome_chunks: tuple[int, ...] = (1, 256, 256)
    ome_steps: int = 5  # S3: steps to a new plane, each measured once it settled
    ome_scrub_steps: int = 20  # S8: steps of each of its two scrubs
    s3_timeout_s: float = 150.0  # S3's bound: napari reads the whole Z stack per step (zarr levels)
    revisit_trials: int = 5  # S6 (a)
    neighbour_trials: int = 5  # S6 (b)
    pause_s: float = 1.0  # S6 (b): rest on P this long before stepping to P+1
    memory_shape: tuple[int, int, int] = (100, 1024, 1024)  # S4/S5 numpy image
    mixed_shape: tuple[int, int, int] = (200, 256, 256)  # S2 numpy layer (float32, plane z == z)
    heartbeat_ms: int = 3
    scenario_timeout_s: float = 60.0  # bound on one repetition of one scenario
    window_size: tuple[int, int] = (1024, 800)
    fresh_viewer: bool = True  # False: one viewer per mode process, emptied between repetitions
    profile_gaps: bool = False
    #: Time every main-thread event and report what each scrub's longest gap was made of.
    trace_gaps: bool = False
    #: Drop every paint (the window draws nothing) and clock frames at 60 Hz: the main thread's
    #: cost with painting free, which a GPU comes close to and software GL does not.
    no_paint: bool = False
    latency_log: bool = False  # 'ours' only: write our slicer's latency log (stage breakdown)
    read_engine: str = 'auto'  # 'ours' only: SlicingOptions.read_engine (auto, tensorstore, zarr)
    keep_timeline: bool = True
    #: (busy ms, period ms): a thread beside every mode spins Python that long of every period,
    #: from the first scrub of each repetition to its end (``Spinner``); None: none.
    spin: tuple[float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        for k in (
            'volume_shape',
            'ome_shape',
            'ome_chunks',
            'memory_shape',
            'mixed_shape',
            'window_size',
            'spin',
        ):
            if kwargs.get(k) is not None:
                kwargs[k] = tuple(kwargs[k])
        return cls(**kwargs)

    @classmethod
    def make(cls, *, quick: bool = False, size: str | None = None, **overrides: Any) -> BenchSpec:
        """Defaults for a full run, or ``quick`` ones (small volume, fewer steps)."""
        size = size or ('small' if quick else 's1')
        if size not in SIZES:
            raise ValueError(f'size must be one of {sorted(SIZES)}, not {size!r}')
        base: dict[str, Any] = {'size': size, **SIZES[size]}
        if quick:
            base.update(
                single_steps=8,
                scenario_timeout_s=30.0,
                ome_steps=3,
                revisit_trials=3,
                neighbour_trials=3,
                s3_timeout_s=60.0,
            )
        if size == 'tiny':
            base.update(
                steps=10,
                scenario_timeout_s=20.0,
                ome_steps=2,
                ome_scrub_steps=3,
                revisit_trials=2,
                neighbour_trials=2,
                s3_timeout_s=30.0,
            )
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def timeout_for(self, scenario: str) -> float:
        """Bound on one repetition of ``scenario``."""
        if scenario in OME_SCENARIOS:
            return max(self.scenario_timeout_s, self.s3_timeout_s)
        return self.scenario_timeout_s

    def mode_timeout_s(self) -> float:
        """Bound on a whole mode subprocess: start-up plus every repetition's own bound."""
        return 60.0 + self.repeat * sum(self.timeout_for(s) for s in self.scenarios)
