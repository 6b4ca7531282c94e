"""User options: keywords to ``enable()``, or environment variables ``NAPARI_ASYNC_SLICING_<NAME>``."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MiB = 1024 * 1024
GiB = 1024 * MiB

#: The values of ``SlicingOptions.read_engine``.
READ_ENGINES = ('auto', 'tensorstore', 'zarr')


@dataclass(frozen=True)
class SlicingOptions:
    #: Byte budget of the decoded chunk cache (0 disables; at most 1 GiB).
    cache_bytes: int = 256 * MiB
    #: Worker threads for interactive work (visible 2D planes). Reads are I/O-bound, so > cores.
    workers: int = 6
    #: Threads for heavy work (3D volumes, prefetch), so they never starve interactive requests.
    heavy_slots: int = 2
    #: Neighbour planes to prefetch in the scrub direction (0 disables).
    prefetch_radius: int = 2
    #: JSON-lines latency log file (``None`` disables).
    log: str | None = None
    #: Seconds a screenshot waits for pending slices.
    screenshot_timeout: float = 30.0
    #: Seconds a chunk read may take (a stalled server) and the window in which transient
    #: failures are retried before the user is told (0 disables the timeout).
    read_timeout: float = 15.0
    #: Python's thread switch interval (``sys.setswitchinterval``, seconds) while a viewer uses our
    #: slicer; 0 (the default) leaves the interpreter's 5 ms. Reads run Python on other threads
    #: (zarr's event loop, aiohttp, decoding): a shorter interval lets them through while the main
    #: thread works, so reads finish sooner and more of a scrub's planes are shown, but each shown
    #: plane costs the main thread a repaint (see the design doc's A/B before turning it on).
    switch_interval: float = 0.0
    #: Freeze Python's garbage collector's objects when the viewer is at rest, so that full
    #: collections during a drag walk only what was made since (``_gc_freeze``; thawed when a
    #: layer is removed or the viewer closes). ``NAPARI_ASYNC_SLICING_FREEZE_GC=0`` turns it off.
    freeze_gc: bool = True
    #: What reads zarr arrays (and the zarr array under ``dask.array.from_zarr``): ``'zarr'``
    #: (zarr-python), ``'tensorstore'`` (where it is installed and the store maps to a
    #: tensorstore spec; anything else falls back to zarr-python), or ``'auto'``: whichever the
    #: benchmarks say is faster (``_reading._tensorstore.AUTO_USES_TENSORSTORE``: tensorstore
    #: where it is installed, the ``[tensorstore]`` extra).
    read_engine: str = 'auto'
    #: A ``distributed.Client``: dask-backed layers compute their chunks on its cluster (R21).
    #: Keyword only (no environment variable); ``enable(dask_client='default')`` uses the
    #: current default client.
    dask_client: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.cache_bytes <= GiB:
            raise ValueError(f'cache_bytes must be within 0..{GiB}, got {self.cache_bytes}')
        if self.workers < 1 or self.heavy_slots < 1:
            raise ValueError('workers and heavy_slots must be at least 1')
        if self.prefetch_radius < 0:
            raise ValueError('prefetch_radius must be >= 0')
        if self.read_timeout < 0:
            raise ValueError('read_timeout must be >= 0')
        if not 0 <= self.switch_interval <= 0.1:
            raise ValueError(f'switch_interval must be within 0..0.1 s, got {self.switch_interval}')
        if self.read_engine not in READ_ENGINES:
            raise ValueError(
                f'read_engine must be one of {", ".join(READ_ENGINES)}, got {self.read_engine!r}'
            )
        if isinstance(self.dask_client, str):
            if self.dask_client != 'default':
                raise ValueError("dask_client must be a distributed.Client or 'default'")
            from distributed import default_client

            object.__setattr__(self, 'dask_client', default_client())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> SlicingOptions:
        """Defaults, then environment variables, then explicit keywords."""
        if environ is None:
            environ = os.environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f'NAPARI_ASYNC_SLICING_{f.name.upper()}')
            if raw is None or raw == '' or f.name == 'dask_client':
                continue
            if f.name in ('log', 'read_engine'):
                values[f.name] = raw.strip() if f.name == 'read_engine' else raw
            elif f.name in ('screenshot_timeout', 'read_timeout', 'switch_interval'):
                values[f.name] = float(raw)
            elif f.name == 'freeze_gc':
                values[f.name] = raw.strip().lower() not in ('0', 'false', 'no', 'off')
            else:
                values[f.name] = int(raw)
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f'unknown option(s): {", ".join(sorted(unknown))}')
        values.update(overrides)
        return cls(**values)
