"""asv benchmarks: NAP-4 G3 latencies and DESIGN.md S1/S2/S3/S6/S7 at a reduced size, per slicing mode.

asv's timing benchmarks cannot see an asynchronous slice land on screen, so these are ``track_*``
benchmarks returning milliseconds (or counts). ``setup_cache`` runs the scenarios once per asv run
through ``napari_async_slicing._bench`` — every mode in its own fresh subprocess, real shown
viewers, measured on what vispy holds and with a main-thread heartbeat — and each ``track_*``
reads one number for one mode from that result.

Sizes: ``small`` sample volume (50×512×512 uint16, chunks 1×256×256) over HTTP on 127.0.0.1 with
50 ms per request, in-memory 50×512×512 uint16, S3 on the ``tiny`` OME-Zarr (6×128×128, 4 levels). ``NAPARI_ASYNC_SLICING_ASV_SIZE=tiny`` shrinks
everything (the test suite uses it); ``NAPARI_ASYNC_SLICING_ASV_LATENCY`` sets the latency.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

try:
    import napari_async_slicing  # noqa: F401
except ImportError:  # a clean clone that was not pip-installed: use its src/ layout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'src'))

MODES = ['napari-sync', 'napari-async', 'ours']


def _spec():
    from napari_async_slicing._bench import BenchSpec

    size = os.environ.get('NAPARI_ASYNC_SLICING_ASV_SIZE', 'small')
    latency = float(os.environ.get('NAPARI_ASYNC_SLICING_ASV_LATENCY', '0.05'))
    return BenchSpec.make(quick=True, size=size, scenarios=['S1', 'S2', 'S3', 'S4', 'S5', 'S6', 'S7', 'S8'],
                          repeat=1, latency=latency, keep_timeline=False)


def setup_cache():
    """Run every scenario for every mode once; return ``{mode: {scenario: {metric: value}}}``."""
    from napari_async_slicing._bench import run_modes
    from napari_async_slicing._bench._report import aggregate

    results = run_modes(_spec(), MODES)
    table = aggregate(results)['table']
    out: dict[str, dict[str, dict[str, float]]] = {m: {} for m in MODES}
    for scenario, metrics in table.items():
        for metric, per_mode in metrics.items():
            for mode, value in per_mode.items():
                out[mode].setdefault(scenario, {})[metric] = math.nan if value is None else value
    return out


setup_cache.timeout = 900


def _track(name: str, scenario: str, metric: str, unit: str, doc: str):
    def track(cache, mode):
        return cache.get(mode, {}).get(scenario, {}).get(metric, math.nan)

    track.params = MODES
    track.param_names = ['mode']
    track.unit = unit
    track.timeout = 900
    track.__doc__ = doc
    track.__name__ = track.__qualname__ = name
    return track


# NAP-4 G3 ---------------------------------------------------------------------------------------
track_g3_single_slice_latency = _track(
    'track_g3_single_slice_latency', 'S4', 'latency_median_ms', 'ms',
    'S4: one step on an in-memory image until vispy holds it (median over the steps).')
track_g3_last_of_25_latency = _track(
    'track_g3_last_of_25_latency', 'S5', 'last_latency_ms', 'ms',
    'S5: 25 step requests within 1 s on an in-memory image: latency of the last one.')

# S1 remote scrub ----------------------------------------------------------------------------------
track_s1_final_plane_latency = _track(
    'track_s1_final_plane_latency', 'S1', 'final_latency_ms', 'ms',
    'S1: time from the last scrub step until vispy holds its plane.')
track_s1_final_after_due = _track(
    'track_s1_final_after_due', 'S1', 'final_after_due_ms', 'ms',
    'S1: time from when the last scrub step was due (had the main thread kept up with the drag) '
    'until vispy holds its plane: the lag of the steps plus the final latency.')
track_s1_max_main_thread_gap = _track(
    'track_s1_max_main_thread_gap', 'S1', 'max_gap_ms', 'ms',
    'S1: largest gap between main-thread heartbeat ticks during the scrub.')
track_s1_stall_over_16ms = _track(
    'track_s1_stall_over_16ms', 'S1', 'stall_ms', 'ms',
    'S1: sum of (gap - 16 ms) over main-thread gaps above 16 ms.')
track_s1_max_gap_paint_excluded = _track(
    'track_s1_max_gap_paint_excluded', 'S1', 'max_gap_ex_paint_ms', 'ms',
    'S1: largest main-thread gap during the scrub with the time spent painting taken out.')
track_s1_main_cpu_per_step = _track(
    'track_s1_main_cpu_per_step', 'S1', 'main_cpu_per_step_ms', 'ms',
    'S1: main-thread CPU per step outside paint (step handlers, applies).')
track_s1_planes_applied = _track(
    'track_s1_planes_applied', 'S1', 'planes_applied', 'planes',
    'S1: distinct planes vispy showed during the scrub.')

# S2 mixed remote + numpy ---------------------------------------------------------------------------
track_s2_numpy_layer_latency = _track(
    'track_s2_numpy_layer_latency', 'S2', 'numpy_median_ms', 'ms',
    'S2: median time until the in-memory layer shows each step while a remote layer loads.')
track_s2_numpy_layer_latency_max = _track(
    'track_s2_numpy_layer_latency_max', 'S2', 'numpy_max_ms', 'ms',
    'S2: worst time until the in-memory layer shows a step while a remote layer loads.')

# S3 multiscale OME-Zarr / S6 revisit, neighbour after a pause (baselines for the chunk cache,
# prefetch and progressive multiscale of issue 7) -----------------------------------------------------
track_s3_first_pixels = _track(
    'track_s3_first_pixels', 'S3', 'first_pixels_ms', 'ms',
    'S3: step on a remote OME-Zarr until vispy holds the new plane at any level (median).')
track_s3_full_resolution = _track(
    'track_s3_full_resolution', 'S3', 'full_res_ms', 'ms',
    'S3: step on a remote OME-Zarr until vispy holds the new plane at the level napari picks.')
track_s3_cold_first_pixels = _track(
    'track_s3_cold_first_pixels', 'S3', 'cold_first_pixels_ms', 'ms',
    'S3: cold jump (ours: chunk cache emptied first) until vispy holds the plane at any level.')
track_s3_cold_full_resolution = _track(
    'track_s3_cold_full_resolution', 'S3', 'cold_full_res_ms', 'ms',
    'S3: cold jump until vispy holds the plane at the level napari picks (median).')
track_s6_revisit = _track(
    'track_s6_revisit', 'S6', 'revisit_ms', 'ms',
    'S6: A, B, back to A on the remote volume: time until vispy holds A again (median).')
track_s6_neighbour_after_pause = _track(
    'track_s6_neighbour_after_pause', 'S6', 'neighbour_ms', 'ms',
    'S6: rest on plane P for 1 s, step to P + 1: time until vispy holds it (median).')

# S8 dask multiscale (napari-ome-zarr style) ------------------------------------------------------
track_s8_final_after_due = _track(
    'track_s8_final_after_due', 'S8', 'final_after_due_ms_2', 'ms',
    'S8: second scrub over new planes of dask levels: final plane after the last step was due.')
track_s8_max_gap_paint_excluded = _track(
    'track_s8_max_gap_paint_excluded', 'S8', 'max_gap_ex_paint_ms', 'ms',
    'S8: largest main-thread gap over both scrubs, paint taken out.')

# S7 opening remote data ------------------------------------------------------------------------------
track_s7_add_image = _track(
    'track_s7_add_image', 'S7', 'add_ms', 'ms',
    'S7: viewer.add_image of the remote volume (no contrast limits given) until it returns.')
track_s7_first_plane = _track(
    'track_s7_first_plane', 'S7', 'first_plane_ms', 'ms',
    'S7: viewer.add_image call until vispy holds the plane dims shows.')
