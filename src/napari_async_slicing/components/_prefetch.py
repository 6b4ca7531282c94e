"""Reads nobody asked for yet: the step's own reads sent at once, a steady scrub's next plane,
and at rest the neighbour planes and the coarse window (R14).

The prefetcher never builds a napari request. It learns what each layer reads from the reads its
requests make (the layer's *footprint*: array and selection per level) and moves that footprint
along the axis the step moves. It runs on the IO loop, beside the read queue it feeds; the main
thread only tells it of steps and rests (one call each).

- At a step: the new plane's reads, predicted from the footprint, are wanted at once (the
  request's worker joins them), with a steady scrub's next plane behind them.
- At rest (the layer's newest plane shown, nothing visible in flight): the planes
  ±1..``prefetch_radius`` along the axis that moved last (direction of motion first, nearest
  first), one plane at a time; and for multiscale layers the coarsest level of the planes around
  the shown one (the *coarse window*), so a jump shows its first look from the cache.

Every step replaces what a layer wanted (:meth:`ReadQueue.want`): prefetch never delays what
the user asks for, and stops when it is no longer what they will ask for next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_async_slicing import _napari_compat as compat
from napari_async_slicing._reading import ChunkRead, ReadQueue, ReadTogether, Tier, call_on_loop, source_for
from napari_async_slicing.components._motion import Motion, Move

logger = logging.getLogger(__name__)

#: At rest, a multiscale layer's coarsest level is read for this many planes around the shown
#: one (at most ``COARSE_WINDOW_BYTES``, or an eighth of the cache budget).
COARSE_WINDOW_PLANES = 64
COARSE_WINDOW_BYTES = 16 << 20


@dataclass(frozen=True)
class StepInfo:
    """What the main thread tells the prefetcher of a layer's step (cheap values only)."""

    plane: tuple  # (step, dims order, ndisplay)
    nsteps: tuple[int, ...]
    #: ``dims.ndim - layer.ndim``: world axis ``a`` is the layer's data axis ``a - offset``.
    axis_offset: int
    move: Move | None
    #: (world axis, +1 or -1) to prefetch along at rest.
    direction: tuple[int, int] | None
    heavy: bool


@dataclass
class _Read:
    array: Any
    selection: tuple
    coarse: bool


@dataclass
class _Layer:
    info: StepInfo | None = None
    #: The newest request's reads, by array, and the plane it showed.
    request_id: int = -1
    plane: tuple = ()
    reads: dict[int, _Read] = field(default_factory=dict)
    #: Learned from two footprints: (id(array), world axis) -> (data axis, indices per step).
    axes: dict[tuple[int, int], tuple[int, float]] = field(default_factory=dict)


class Prefetcher:
    """See the module docstring. Public methods may be called from any thread."""

    def __init__(self, queue: ReadQueue, radius: int) -> None:
        self.queue = queue
        self.radius = radius
        #: Only with a cache: what is read ahead must be kept until it is asked for.
        self.cache: Any = queue.cache
        self.enabled = self.cache is not None
        self._layers: dict[int, _Layer] = {}  # IO loop only

    # --- told by the slicer (any thread) -----------------------------------------------------

    def observed(
        self, key: int, request_id: int, plane: tuple, array: Any, selection: tuple, coarse: bool
    ) -> None:
        """A request of layer ``key`` read ``array[selection]`` (a worker)."""
        if self.enabled:
            call_on_loop(lambda: self._observed(key, request_id, plane, array, selection, coarse))

    def observer(self, task: Any) -> Callable[[Any, tuple, bool], None]:
        """What tells the prefetcher of ``task``'s reads (a worker calls it)."""
        key = id(task.layer)

        def observe(array: Any, selection: tuple, coarse: bool) -> None:
            self.observed(key, task.request_id, task.plane, array, selection, coarse)

        return observe

    def stepped(self, key: int, info: StepInfo) -> None:
        """Layer ``key`` was asked for a new plane (main thread, at submit)."""
        if self.enabled:
            call_on_loop(lambda: self._stepped(key, info))

    def rested(self, keys: list[int]) -> None:
        """These layers show their newest plane and nothing visible is in flight (main thread)."""
        if self.enabled and self.radius and keys:
            call_on_loop(lambda: self._rested_all(keys))

    def forget(self, key: int) -> None:
        """The layer left the viewer: nothing more is read for it."""
        call_on_loop(lambda: self._forget(key))

    # --- on the IO loop ----------------------------------------------------------------------

    def _observed(
        self, key: int, request_id: int, plane: tuple, array: Any, selection: tuple, coarse: bool
    ) -> None:
        layer = self._layers.setdefault(key, _Layer())
        if request_id < layer.request_id:
            return  # an older request's read, late
        if request_id > layer.request_id:
            self._learn(layer, plane, array, selection)
            if plane[1:] != layer.plane[1:]:
                layer.axes.clear()  # another dims order or ndisplay: learn again
            layer.request_id, layer.plane, layer.reads = request_id, plane, {}
        layer.reads[id(array)] = _Read(array, tuple(selection), coarse)

    def _learn(self, layer: _Layer, plane: tuple, array: Any, selection: tuple) -> None:
        """From the same array read at two steps that differ on one world axis: which data axis
        follows it, and by how many indices per step."""
        before = layer.reads.get(id(array))
        if before is None or plane[1:] != layer.plane[1:]:
            return
        moved = [a for a in _not_displayed(plane) if layer.plane[0][a] != plane[0][a]]
        starts = [(_start(x), _start(y)) for x, y in zip(before.selection, selection, strict=False)]
        changed = [(d, x, y) for d, (x, y) in enumerate(starts) if x is not None and y is not None and x != y]
        if len(moved) == 1 and len(changed) == 1:
            a, (d, x, y) = moved[0], changed[0]
            layer.axes[(id(array), a)] = (d, (y - x) / (plane[0][a] - layer.plane[0][a]))

    def _stepped(self, key: int, info: StepInfo) -> None:
        layer = self._layers.setdefault(key, _Layer())
        layer.info = info
        wants: list[tuple[ChunkRead, Tier, float]] = []
        if not info.heavy and layer.reads and layer.plane[1:] == info.plane[1:]:
            # A fast drag over a multiscale layer reads its coarse level only (``Move.hold_s``).
            coarse_only = info.move is not None and info.move.hold_s > 0 and _has_coarse(layer)

            def reads(plane: tuple) -> list[_Read]:
                return [read for read in self._moved(layer, plane) if read.coarse or not coarse_only]

            # The plane asked for now: its reads go out before its request reaches a worker.
            for read in reads(info.plane[0]):
                wants.extend((r, Tier.VISIBLE, 0 if read.coarse else 1) for r in self._chunk_reads(read))
            move = info.move
            if self.radius and move is not None and move.steady:
                ahead = list(info.plane[0])
                ahead[move.axis] += move.stride
                if 0 <= ahead[move.axis] < info.nsteps[move.axis]:
                    for read in reads(tuple(ahead)):
                        wants.extend((r, Tier.PREFETCH, 0) for r in self._chunk_reads(read))
        self.queue.want(key, wants)

    def _rested_all(self, keys: list[int]) -> None:
        for key in keys:
            self._rested(key)

    def _rested(self, key: int) -> None:
        layer = self._layers.get(key)
        if layer is None or layer.info is None:
            return
        info = layer.info
        if info.heavy or not layer.reads or layer.plane[1:] != info.plane[1:] or info.direction is None:
            return
        axis, sign = info.direction
        step = layer.plane[0]
        if axis >= len(step):
            return
        wants: list[tuple[ChunkRead, Tier, float]] = []
        offsets = [sign * k for k in range(1, self.radius + 1)]
        offsets += [-offset for offset in offsets]
        move = info.move
        if move is not None and move.steady:  # a steady scrub's next plane stays first
            axis = move.axis
            offsets = [move.stride] + [o for o in offsets if o != move.stride]
        for rank, offset in enumerate(offsets):
            moved = list(step)
            moved[axis] += offset
            if 0 <= moved[axis] < info.nsteps[axis]:
                for read in self._moved(layer, tuple(moved)):
                    wants.extend((r, Tier.PREFETCH, rank) for r in self._chunk_reads(read))
        wants.extend(self._coarse_window(layer, axis))
        self.queue.want(key, wants)

    def _forget(self, key: int) -> None:
        self._layers.pop(key, None)
        self.queue.want(key, [])

    # --- footprints --------------------------------------------------------------------------

    def _axis(self, layer: _Layer, read: _Read, world_axis: int) -> tuple[int, float] | None:
        learned = layer.axes.get((id(read.array), world_axis))
        if learned is not None:
            return learned
        d = world_axis - (layer.info.axis_offset if layer.info is not None else 0)
        if 0 <= d < len(read.selection) and _start(read.selection[d]) is not None:
            return d, 1.0  # napari's default: the layer's axis for the world's, one index a step
        return None

    def _moved(self, layer: _Layer, step: tuple) -> list[_Read]:
        """The layer's footprint moved to ``step``: each array's read whose position could be
        moved (within the array)."""
        out = []
        axes = _not_displayed(layer.plane)
        for read in layer.reads.values():
            selection = list(read.selection)
            for a in axes:
                x, y = layer.plane[0][a], step[a]
                if x == y:
                    continue
                axis = self._axis(layer, read, a)
                if axis is None:
                    break
                d, ratio = axis
                moved = _shift(selection[d], round((y - x) * ratio), read.array.shape[d])
                if moved is None:
                    break
                selection[d] = moved
            else:
                out.append(_Read(read.array, tuple(selection), read.coarse))
        return out

    def _coarse_window(self, layer: _Layer, axis: int) -> list[tuple[ChunkRead, Tier, float]]:
        """The coarsest level's planes around the shown one along world ``axis``, nearest first."""
        budget = min(self.cache.max_bytes // 8, COARSE_WINDOW_BYTES)
        wants: list[tuple[ChunkRead, Tier, float]] = []
        for read in layer.reads.values():
            mapped = self._axis(layer, read, axis) if read.coarse else None
            if mapped is None:
                continue
            d = mapped[0]
            at = read.selection[d]
            start, stop = (at, at + 1) if isinstance(at, int) else (at.start, at.stop)
            plane = [
                1 if isinstance(s, int) or i == d else len(range(*s.indices(n)))
                for i, (s, n) in enumerate(zip(read.selection, read.array.shape, strict=False))
            ]
            plane_bytes = max(1, int(np.prod(plane)) * np.dtype(read.array.dtype).itemsize)
            half = min(COARSE_WINDOW_PLANES, budget // plane_bytes) // 2
            if half < 1:
                continue
            selection = list(read.selection)
            selection[d] = slice(max(0, start - half), min(read.array.shape[d], stop + half))
            for chunk_read in self._chunk_reads(_Read(read.array, tuple(selection), True)):
                distance = abs(chunk_read.region[d].start - start)
                wants.append((chunk_read, Tier.PREVIEW, distance))
        return wants

    def _chunk_reads(self, read: _Read) -> list[ChunkRead]:
        try:
            source = source_for(read.array, self.queue.env)
            plan = source.plan(read.selection, self.cache.max_bytes // 4)
        except Exception:
            logger.debug('prefetch plan failed', exc_info=True)
            return []
        if plan is None:
            return []
        key = source.cache_key(self.cache)
        together = ReadTogether() if source.reads_together else None
        return [ChunkRead((key, c), source, c, plan.region(c), together) for c in plan.chunks]


def step_info(layer: Any, dims: Any, task: Any, motion: Motion) -> StepInfo:
    """Main thread: what the prefetcher needs to know of ``task``, a step of ``layer``."""
    move = motion.step(task.step)
    direction = motion.direction
    if direction is None:  # no motion yet: the innermost slider, forwards
        axis = compat.default_scrub_axis(dims)
        direction = None if axis is None else (axis, 1)
    return StepInfo(
        plane=task.plane,
        nsteps=compat.dims_nsteps(dims),
        axis_offset=dims.ndim - layer.ndim,
        move=move,
        direction=direction,
        heavy=task.heavy,
    )


def _has_coarse(layer: _Layer) -> bool:
    """Whether the layer's requests read a coarse level (progressive multiscale)."""
    return any(read.coarse for read in layer.reads.values())


def _not_displayed(plane: tuple) -> list[int]:
    """The world axes a plane's step moves along (not the displayed ones)."""
    step, order, ndisplay = plane
    displayed = set(order[-ndisplay:]) if ndisplay else set()
    return [a for a in range(len(step)) if a not in displayed]


def _start(index: Any) -> int | None:
    """Where an axis's selection starts: the index itself, or a slice's start."""
    if isinstance(index, int | np.integer):
        return int(index)
    if isinstance(index, slice) and index.start is not None and (index.step or 1) > 0:
        return int(index.start)
    return None


def _shift(index: Any, by: int, size: int) -> Any:
    """``index`` (an int, or a thick slice) moved by ``by`` along an axis of ``size``; None if
    it would leave the axis."""
    if isinstance(index, int | np.integer):
        moved = int(index) + by
        return moved if 0 <= moved < size else None
    if isinstance(index, slice) and index.start is not None and index.stop is not None:
        start, stop = index.start + by, index.stop + by
        return slice(start, stop, index.step) if start >= 0 and stop <= size else None
    return None
