"""How a selection maps onto an array's chunk grid."""

from __future__ import annotations

import bisect
import itertools
from typing import Any

import numpy as np


class RegularGrid:
    def __init__(self, size: int, chunk: int) -> None:
        self.size, self.chunk = size, chunk

    def index(self, i: int) -> int:
        return i // self.chunk

    def span(self, ci: int) -> tuple[int, int]:
        return ci * self.chunk, min((ci + 1) * self.chunk, self.size)


class IrregularGrid:
    def __init__(self, sizes: tuple[int, ...]) -> None:
        self.bounds = [0, *np.cumsum(sizes).tolist()]

    def index(self, i: int) -> int:
        return bisect.bisect_right(self.bounds, i) - 1

    def span(self, ci: int) -> tuple[int, int]:
        return self.bounds[ci], self.bounds[ci + 1]


Selection = tuple  # ints and positive-step slices, one per axis


class ChunkPlan:
    """How ``array[selection]`` (ints and positive-step slices) maps onto the array's chunks."""

    def __init__(self, shape: tuple[int, ...], grids: list, selection: Selection) -> None:
        selection = tuple(selection) + (slice(None),) * (len(shape) - len(selection))
        self.grids = grids
        self.out_shape: list[int] = []
        #: Per axis: [(chunk index, out index or None, index inside the chunk)].
        per_axis: list[list[tuple[int, slice | None, slice | int]]] = []
        for n, grid, sel in zip(shape, grids, selection, strict=True):
            if isinstance(sel, slice):
                r = range(*sel.indices(n))
                if r.step <= 0:
                    raise ValueError('negative steps are read directly')
                self.out_shape.append(len(r))
                ops: list[tuple[int, slice | None, slice | int]] = []
                if len(r):
                    for ci in range(grid.index(r[0]), grid.index(r[-1]) + 1):
                        c0, c1 = grid.span(ci)
                        lo = max(0, -(-(c0 - r.start) // r.step))
                        hi = min(len(r), -(-(c1 - r.start) // r.step))
                        if lo < hi:
                            ops.append((ci, slice(lo, hi), slice(r[lo] - c0, r[hi - 1] - c0 + 1, r.step)))
                per_axis.append(ops)
            else:
                i = int(sel)
                i = i + n if i < 0 else i
                if not 0 <= i < n:
                    raise IndexError(f'index {sel} out of range for size {n}')
                ci = grid.index(i)
                per_axis.append([(ci, None, i - grid.span(ci)[0])])
        self.ops = [
            (
                tuple(op[0] for op in combo),
                tuple(op[1] for op in combo if op[1] is not None),
                tuple(op[2] for op in combo),
            )
            for combo in itertools.product(*per_axis)
        ]

    @property
    def chunks(self) -> list[tuple[int, ...]]:
        """The chunks read, each once, in the plan's order."""
        return list(dict.fromkeys(op[0] for op in self.ops))

    def region(self, chunk: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(slice(*g.span(ci)) for g, ci in zip(self.grids, chunk, strict=True))

    def chunk_bytes(self, chunk: tuple[int, ...], itemsize: int) -> int:
        return int(np.prod([s.stop - s.start for s in self.region(chunk)])) * itemsize

    def assemble(self, chunks: dict, dtype: Any) -> np.ndarray:
        """The selection's array from ``chunks`` (a copy; or, where the chunks are views of one
        array that is the selection laid out as it should be, that array)."""
        whole = self._laid_out(chunks, dtype)
        if whole is not None:
            return whole
        out = np.empty(self.out_shape, dtype=dtype)
        for chunk, out_index, in_index in self.ops:
            out[out_index] = chunks[chunk][in_index]
        return out

    def _laid_out(self, chunks: dict, dtype: Any) -> np.ndarray | None:
        """The array every chunk is a view of, shaped as the selection, if each chunk is where
        the selection has it (a source read them as one); else None."""
        base = owner(next(iter(chunks.values()))) if chunks else None
        if base is None or base.dtype != dtype or base.size != np.prod(self.out_shape):
            return None
        whole = base.reshape(self.out_shape)
        if owner(whole) is not base:
            return None  # reshaping it would copy
        for chunk, out_index, in_index in self.ops:
            value = chunks[chunk]
            if owner(value) is not base or not _same_view(value[in_index], whole[out_index]):
                return None
        return whole


def owner(array: np.ndarray) -> np.ndarray | None:
    """The array whose memory ``array`` is a view of (None if it is not a view of one)."""
    base = array.base
    if not isinstance(base, np.ndarray):
        return None
    while isinstance(base.base, np.ndarray):
        base = base.base
    return base


def _same_view(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` and ``b`` are the same elements of one buffer, laid out alike."""
    return (
        a.shape == b.shape
        and a.__array_interface__['data'][0] == b.__array_interface__['data'][0]
        and all(n == 1 or sa == sb for n, sa, sb in zip(a.shape, a.strides, b.strides, strict=True))
    )
