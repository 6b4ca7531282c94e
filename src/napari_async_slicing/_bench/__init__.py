"""Side-by-side benchmark: napari's sync slicing, napari's built-in async slicing, and ours.

``bench_main(argv)`` runs the DESIGN.md §5 scenarios (S1 remote scrub, S2 mixed remote + numpy,
S3 multiscale OME-Zarr steps, S4 in-memory single slice, S5 25 requests in 1 s, S6 revisit and
neighbour after a pause) once per mode, each mode in a fresh subprocess, and writes ``bench.md``, ``bench.json`` and ``bench.png``. Everything is measured on what vispy was
handed (the Image node's data, identified plane by plane) and with a main-thread QTimer heartbeat.

Also runnable as ``python -m napari_async_slicing._bench``. No test dependencies.
"""

from __future__ import annotations

from napari_async_slicing._bench._config import MODES, SCENARIOS, BenchSpec
from napari_async_slicing._bench._main import bench_main
from napari_async_slicing._bench._runner import run_modes

__all__ = ['MODES', 'SCENARIOS', 'BenchSpec', 'bench_main', 'run_modes']
