"""Deterministic sample volumes whose planes can be told apart.

Voxel values follow :func:`plane_value`::

    value(z, y, x) = (64 * z + ((y // 4) + 2 * (x // 4)) % 64) % 65536

The low six bits form a diagonal stripe pattern (0..63, equal to 0 at the
origin) that makes every plane non-constant; the remaining bits encode ``z``.
Plane ``z`` is therefore identified by ``value(z, 0, 0) // 64`` for ``z < 1024``.
Multiscale level ``k`` keeps Z and subsamples Y and X: its plane ``z`` is the
level-0 plane ``z`` sliced ``[::2**k, ::2**k]``.

The demo's sample (``sample_data("cells", size)``) has the content ``"cells"`` instead: soft,
textured nuclei on a dim background, a picture a person recognises, with the plane in the low
byte (see :func:`cells_plane`)::

    value(z, y, x) = 256 * brightness(z, y, x) + z      (brightness 0..255, z < 256)

Its planes are told apart with ``which_plane(array, content="cells")``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr

__all__ = [
    'cache_dir',
    'cells_plane',
    'expected_plane',
    'make_ome_zarr',
    'make_volume',
    'plane_value',
    'sample_data',
    'which_plane',
]

#: Bumped whenever the generated content changes, so stale caches are ignored.
FORMAT_VERSION = 1
_MARKER_KEY = 'napari_async_slicing_sample'
_SLAB_BYTES = 64 * 2**20

#: Shapes and chunks used by :func:`sample_data`.
SAMPLE_SIZES: dict[str, dict[str, dict[str, Any]]] = {
    'volume': {
        'tiny': {'shape': (12, 64, 64), 'chunks': (1, 32, 32)},
        'small': {'shape': (50, 512, 512), 'chunks': (1, 256, 256)},
        's1': {'shape': (200, 1024, 1024), 'chunks': (1, 512, 512)},
    },
    'ome': {
        'tiny': {'shape': (6, 128, 128), 'chunks': (1, 64, 64), 'levels': 4},
        'small': {'shape': (32, 1024, 1024), 'chunks': (1, 256, 256), 'levels': 4},
        's1': {'shape': (64, 2048, 2048), 'chunks': (1, 256, 256), 'levels': 4},
    },
}
#: The demo's OME-Zarr samples: the "ome" shapes with the "cells" content (no labels).
SAMPLE_SIZES['cells'] = {
    size: dict(params, content='cells', labels=False) for size, params in SAMPLE_SIZES['ome'].items()
}

#: What a sample's voxels hold: ``"stripes"`` (:func:`plane_value`) or ``"cells"``
#: (:func:`cells_plane`).
CONTENTS = ('stripes', 'cells')


def plane_value(z: npt.ArrayLike, y: npt.ArrayLike, x: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    """Return the sample value at level-0 coordinates ``(z, y, x)`` (broadcasting)."""
    zi = np.asarray(z, dtype=np.int64)
    yi = np.asarray(y, dtype=np.int64)
    xi = np.asarray(x, dtype=np.int64)
    pattern = ((yi // 4) + 2 * (xi // 4)) % 64
    return ((64 * zi + pattern) % 65536).astype(np.uint16)


#: One nucleus per cell of this (z, y, x) lattice of level-0 voxels, placed at random in it.
_CELL_LATTICE = (10.0, 72.0, 72.0)
#: More than the largest half-extent a nucleus has along z (5.5 * 1.3) and in (y, x) (26 * 1.3).
_CELL_REACH = (7.5, 34.0)


def _hash01(salt: int, *indices: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Uniform [0, 1) numbers, a pure function of ``salt`` and the integer ``indices``."""
    with np.errstate(over='ignore'):
        h = np.full(np.shape(indices[0]), (salt * 0x9E3779B97F4A7C15) % 2**64, dtype=np.uint64)
        for mult, idx in zip(
            (0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5), indices, strict=False
        ):
            h = h ^ (np.asarray(idx).astype(np.uint64) * np.uint64(mult))
            h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)  # splitmix64's finaliser
            h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            h = h ^ (h >> np.uint64(31))
    return (h >> np.uint64(11)).astype(np.float64) / 2.0**53


def _nuclei(z: int, y_range: tuple[float, float], x_range: tuple[float, float]) -> dict[str, Any]:
    """The nuclei that reach plane ``z`` inside the level-0 ``y_range``/``x_range`` (inclusive)."""
    (lz, ly, lx), (rz_max, r_max) = _CELL_LATTICE, _CELL_REACH
    axes = [
        np.arange(math.floor((lo - reach) / size), math.floor((hi + reach) / size) + 1)
        for (lo, hi), reach, size in (((z, z), rz_max, lz), (y_range, r_max, ly), (x_range, r_max, lx))
    ]
    iz, iy, ix = (a.ravel() for a in np.meshgrid(*axes, indexing='ij'))

    def u(salt: int) -> npt.NDArray[np.float64]:
        return _hash01(salt, iz, iy, ix)

    n = {
        'cz': (iz + 0.15 + 0.7 * u(1)) * lz,
        'cy': (iy + 0.2 + 0.6 * u(2)) * ly,
        'cx': (ix + 0.2 + 0.6 * u(3)) * lx,
        'rz': 3.0 + 2.5 * u(4),
        'ry': 15.0 + 11.0 * u(5),
        'angle': np.pi * u(7),
        'bright': 0.45 + 0.5 * u(8),
        'phase': 2 * np.pi * u(9),
    }
    n['rx'] = n['ry'] * (0.65 + 0.35 * u(6))  # rx <= ry <= 26: 26 * 1.3 < _CELL_REACH
    keep = (u(0) < 0.85) & (np.abs(n['cz'] - z) < n['rz'] * 1.3)
    return {k: v[keep] for k, v in n.items()}


def cells_plane(z: int, ys: npt.ArrayLike, xs: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    """Plane ``z`` of the ``"cells"`` content at level-0 rows ``ys`` and columns ``xs`` (sorted).

    ``256 * brightness + z``: textured soft-edged nuclei (one per cell of a jittered lattice,
    some missing, each a few planes deep) on a dim, slowly varying background. The brightness
    depends on the voxel's level-0 coordinates only, so a level's plane is the level-0 plane
    subsampled, whatever the volume's shape. ``z`` must be below 256.
    """
    if not 0 <= z < 256:
        raise ValueError(f'the cells content holds planes 0..255, not {z}')
    ys = np.asarray(ys, dtype=np.float64)
    xs = np.asarray(xs, dtype=np.float64)
    bright = 0.06 + 0.035 * (1 + np.sin(ys[:, None] / 170 + 1.0) * np.cos(xs[None, :] / 230))
    if ys.size and xs.size:
        n = _nuclei(z, (ys[0], ys[-1]), (xs[0], xs[-1]))
        for i in range(len(n['cz'])):
            cy, cx, ry = n['cy'][i], n['cx'][i], n['ry'][i] * 1.3
            y0, y1 = np.searchsorted(ys, [cy - ry, cy + ry])
            x0, x1 = np.searchsorted(xs, [cx - ry, cx + ry])
            if y0 == y1 or x0 == x1:
                continue
            dy, dx = ys[y0:y1, None] - cy, xs[None, x0:x1] - cx
            cos, sin = np.cos(n['angle'][i]), np.sin(n['angle'][i])
            d = np.sqrt(
                ((z - n['cz'][i]) / n['rz'][i]) ** 2
                + ((dy * cos + dx * sin) / n['ry'][i]) ** 2
                + ((dx * cos - dy * sin) / n['rx'][i]) ** 2
            )
            # chromatin-like texture, brighter towards the middle, a soft edge
            texture = 0.88 + 0.12 * np.sin(dy * 0.23 + n['phase'][i]) * np.cos(dx * 0.19 - n['phase'][i])
            nucleus = (
                n['bright'][i] * texture * (1 - 0.3 * np.minimum(d, 1) ** 2) / (1 + np.exp((d - 1) * 14))
            )
            np.maximum(bright[y0:y1, x0:x1], nucleus, out=bright[y0:y1, x0:x1])
    levels = np.clip(np.rint(bright * 255), 0, 255).astype(np.uint16)
    return levels * 256 + np.uint16(z)


def _level_plane(
    z: npt.ArrayLike, ny: int, nx: int, level: int, y0: int = 0, x0: int = 0, content: str = 'stripes'
) -> npt.NDArray[np.uint16]:
    """Values of the ``(ny, nx)`` block at level-``level`` offset ``(y0, x0)``."""
    step = 2**level
    ys = (y0 + np.arange(ny, dtype=np.int64)) * step
    xs = (x0 + np.arange(nx, dtype=np.int64)) * step
    zs = np.asarray(z, dtype=np.int64)
    if content == 'cells':
        planes = [cells_plane(int(zi), ys, xs) for zi in zs.ravel()]
        return np.stack(planes).reshape(*zs.shape, ny, nx)
    return plane_value(zs[..., None, None], ys[:, None], xs[None, :])


def _level_shape(shape: tuple[int, int, int], level: int) -> tuple[int, int, int]:
    step = 2**level
    return (shape[0], math.ceil(shape[1] / step), math.ceil(shape[2] / step))


def expected_plane(
    shape: tuple[int, ...],
    z: int,
    dtype: npt.DTypeLike = np.uint16,
    *,
    level: int = 0,
    content: str = 'stripes',
) -> npt.NDArray[Any]:
    """Return plane ``z`` of a generated volume with level-0 ``shape`` (Z, Y, X).

    With ``level=k`` the plane of multiscale level ``k`` is returned, of shape
    ``(ceil(Y / 2**k), ceil(X / 2**k))``; ``content`` is the sample's (see ``CONTENTS``).
    """
    if len(shape) != 3:
        raise ValueError(f'shape must be (Z, Y, X), got {shape!r}')
    nz = shape[0]
    if not 0 <= z < nz:
        raise IndexError(f'plane {z} out of range for {nz} planes')
    _, ny, nx = _level_shape((shape[0], shape[1], shape[2]), level)
    return _level_plane(z, ny, nx, level, content=content).astype(dtype)


def which_plane(array2d: npt.ArrayLike, *, level: int = 0, content: str = 'stripes') -> int | None:
    """Return the plane index whose level-``level`` plane equals ``array2d`` exactly.

    ``array2d`` must be a whole plane (starting at the origin) of a sample with this
    ``content``. Returns ``None`` if it matches no plane.
    """
    arr = np.asarray(array2d)
    if arr.ndim != 2 or arr.size == 0:
        return None
    first = arr.flat[0]
    if not np.isfinite(first) or first < 0 or first != int(first):
        return None
    z = int(first) % 256 if content == 'cells' else int(first) // 64
    expected = _level_plane(z, arr.shape[0], arr.shape[1], level, content=content)
    return z if np.array_equal(arr, expected) else None


def cache_dir() -> Path:
    """Return the sample-data cache directory (``$NAPARI_ASYNC_SLICING_CACHE``)."""
    env = os.environ.get('NAPARI_ASYNC_SLICING_CACHE')
    base = Path(env) if env else Path.home() / '.cache' / 'napari-async-slicing'
    return base.expanduser()


def _marker(kind: str, **params: Any) -> dict[str, Any]:
    return {'kind': kind, 'version': FORMAT_VERSION, **json.loads(json.dumps(params))}


def _existing_marker(path: Path) -> dict[str, Any] | None:
    """Return the generator marker stored in ``path/zarr.json``, if readable."""
    try:
        meta = json.loads((path / 'zarr.json').read_text())
    except (OSError, ValueError):
        return None
    attrs = meta.get('attributes') or {}
    marker = attrs.get(_MARKER_KEY)
    return marker if isinstance(marker, dict) else None


def _build_atomically(
    path: Path, marker: dict[str, Any], build: Callable[[Path], None], overwrite: bool
) -> Path:
    """Build into a temporary sibling and rename it to ``path``.

    Existing data carrying the same ``marker`` is reused unless ``overwrite``.
    Concurrent builders of the same ``path`` are safe: the first rename wins.
    """
    path = Path(path).expanduser().absolute()
    if path.exists() and not overwrite:
        if _existing_marker(path) == marker:
            return path
        raise FileExistsError(f'{path} exists with different content; pass overwrite=True')
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f'.{path.name}.tmp-{uuid.uuid4().hex}'
    try:
        build(tmp)
        if overwrite and path.exists():
            shutil.rmtree(path)
        try:
            os.rename(tmp, path)
        except OSError:
            # Another process finished first; accept its result if identical.
            if _existing_marker(path) != marker:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _slabs(nz: int, cz: int, plane_bytes: int) -> Iterator[tuple[int, int]]:
    """Yield chunk-aligned Z ranges of at most ``_SLAB_BYTES`` (at least one chunk)."""
    per_slab = max(1, _SLAB_BYTES // max(1, plane_bytes * cz)) * cz
    for z0 in range(0, nz, per_slab):
        yield z0, min(nz, z0 + per_slab)


def _clip_chunks(chunks: tuple[int, int, int], shape: tuple[int, int, int]) -> tuple[int, int, int]:
    return (min(chunks[0], shape[0]), min(chunks[1], shape[1]), min(chunks[2], shape[2]))


def _fill(arr: zarr.Array, level: int, content: str = 'stripes') -> None:
    """Fill a 3D array with level-``level`` data of ``content``, slab by slab."""
    nz, ny, nx = arr.shape
    dtype = arr.dtype
    for z0, z1 in _slabs(nz, arr.chunks[0], ny * nx * dtype.itemsize):
        arr[z0:z1] = _level_plane(np.arange(z0, z1), ny, nx, level, content=content).astype(dtype)


def make_volume(
    path: str | os.PathLike[str],
    shape: tuple[int, int, int] = (200, 1024, 1024),
    chunks: tuple[int, int, int] = (1, 512, 512),
    dtype: npt.DTypeLike = 'uint16',
    overwrite: bool = False,
) -> Path:
    """Write a zarr v3 array of :func:`plane_value` data at ``path`` and return it.

    Data is written in chunk-aligned slabs (bounded memory). An existing array
    generated with the same shape, chunks and dtype is reused.
    """
    shape3 = _as_3tuple(shape, 'shape')
    chunks3 = _as_3tuple(chunks, 'chunks')
    np_dtype = np.dtype(dtype)
    marker = _marker('volume', shape=shape3, chunks=chunks3, dtype=np_dtype.str)

    def build(tmp: Path) -> None:
        arr = zarr.create_array(
            tmp,
            shape=shape3,
            chunks=_clip_chunks(chunks3, shape3),
            dtype=np_dtype,
            zarr_format=3,
            attributes={_MARKER_KEY: marker},
            dimension_names=['z', 'y', 'x'],
        )
        _fill(arr, 0)

    return _build_atomically(Path(path), marker, build, overwrite)


def _axes() -> list[dict[str, str]]:
    return [{'name': ax, 'type': 'space', 'unit': 'micrometer'} for ax in ('z', 'y', 'x')]


def _multiscale(
    name: str, levels: int, base_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
) -> dict[str, Any]:
    datasets = [
        {
            'path': str(k),
            'coordinateTransformations': [
                {'type': 'scale', 'scale': [base_scale[0], base_scale[1] * 2**k, base_scale[2] * 2**k]}
            ],
        }
        for k in range(levels)
    ]
    return {'name': name, 'axes': _axes(), 'datasets': datasets}


def _cells(nz: int, ny: int, nx: int) -> npt.NDArray[np.uint32]:
    """Discs of radius 5 on a 16-pixel grid; disc ``i`` is present where ``(z + i) % 3``."""
    yy, xx = np.mgrid[0:ny, 0:nx]
    gy, gx = yy // 16, xx // 16
    ids = (gy * math.ceil(nx / 16) + gx + 1).astype(np.uint32)
    inside = (yy % 16 - 8) ** 2 + (xx % 16 - 8) ** 2 <= 25
    out = np.zeros((nz, ny, nx), dtype=np.uint32)
    for z in range(nz):
        out[z] = np.where(inside & ((z + ids) % 3 != 0), ids, 0)
    return out


def make_ome_zarr(
    path: str | os.PathLike[str],
    shape: tuple[int, int, int] = (64, 2048, 2048),
    chunks: tuple[int, int, int] = (1, 256, 256),
    levels: int = 4,
    dtype: npt.DTypeLike = 'uint16',
    labels: bool = True,
    overwrite: bool = False,
    content: str = 'stripes',
) -> Path:
    """Write an OME-Zarr 0.5 multiscale image group at ``path`` and return it.

    Levels ``"0"``..``str(levels - 1)`` halve Y and X (Z kept); level ``k`` holds
    ``expected_plane(shape, z, level=k, content=content)``. With ``labels`` a single-level
    uint32 label image ``labels/cells`` is added on the coarsest level's grid.
    """
    shape3 = _as_3tuple(shape, 'shape')
    chunks3 = _as_3tuple(chunks, 'chunks')
    if levels < 1:
        raise ValueError('levels must be >= 1')
    if content not in CONTENTS:
        raise ValueError(f'content must be one of {CONTENTS}, not {content!r}')
    np_dtype = np.dtype(dtype)
    extra = {} if content == 'stripes' else {'content': content}  # stripes' caches stay valid
    marker = _marker(
        'ome', shape=shape3, chunks=chunks3, levels=levels, dtype=np_dtype.str, labels=labels, **extra
    )
    # The omero window: the sample's range (cells: brightness 255 is 65280 + z).
    vmax = 65535 if content == 'cells' else int(plane_value(shape3[0] - 1, 0, 0)) + 63
    ome = {
        'version': '0.5',
        'multiscales': [_multiscale('image', levels)],
        'omero': {
            'channels': [
                {
                    'label': 'sample',
                    'color': 'FFFFFF',
                    'active': True,
                    'window': {'start': 0, 'end': vmax, 'min': 0, 'max': int(np.iinfo(np.uint16).max)},
                }
            ],
            'rdefs': {'model': 'greyscale', 'defaultZ': shape3[0] // 2},
        },
    }

    def build(tmp: Path) -> None:
        root = zarr.create_group(tmp, zarr_format=3, attributes={'ome': ome, _MARKER_KEY: marker})
        for k in range(levels):
            kshape = _level_shape(shape3, k)
            arr = root.create_array(
                str(k),
                shape=kshape,
                chunks=_clip_chunks(chunks3, kshape),
                dtype=np_dtype,
                dimension_names=['z', 'y', 'x'],
            )
            _fill(arr, k, content)
        if labels:
            _write_labels(root, shape3, chunks3, levels)

    return _build_atomically(Path(path), marker, build, overwrite)


def _write_labels(
    root: zarr.Group, shape: tuple[int, int, int], chunks: tuple[int, int, int], levels: int
) -> None:
    coarse = levels - 1
    lshape = _level_shape(shape, coarse)
    lgroup = root.create_group('labels', attributes={'ome': {'version': '0.5', 'labels': ['cells']}})
    cells_attrs = {
        'ome': {
            'version': '0.5',
            'image-label': {'source': {'image': '../../'}},
            'multiscales': [_multiscale('cells', 1, (1.0, float(2**coarse), float(2**coarse)))],
        }
    }
    cells = lgroup.create_group('cells', attributes=cells_attrs)
    arr = cells.create_array(
        '0',
        shape=lshape,
        chunks=_clip_chunks(chunks, lshape),
        dtype='uint32',
        dimension_names=['z', 'y', 'x'],
    )
    arr[:] = _cells(*lshape)


def _as_3tuple(value: tuple[int, ...], name: str) -> tuple[int, int, int]:
    if len(value) != 3 or any(int(v) <= 0 for v in value):
        raise ValueError(f'{name} must be three positive ints (Z, Y, X), got {value!r}')
    return (int(value[0]), int(value[1]), int(value[2]))


def sample_data(kind: str, size: str = 'small') -> Path:
    """Build (or reuse) a cached sample and return its path.

    ``kind`` is ``"volume"`` (plain zarr v3 array, see :func:`make_volume`),
    ``"ome"`` (OME-Zarr group, see :func:`make_ome_zarr`) or ``"cells"`` (the demo's:
    an OME-Zarr group with the ``"cells"`` content, no labels); ``size`` is one of
    ``"tiny"``, ``"small"``, ``"s1"`` (see ``SAMPLE_SIZES``).
    """
    try:
        params = SAMPLE_SIZES[kind][size]
    except KeyError:
        raise ValueError(
            f'unknown sample {kind!r}/{size!r}; kinds: {sorted(SAMPLE_SIZES)}, sizes: {sorted(SAMPLE_SIZES["volume"])}'
        ) from None
    path = cache_dir() / f'{kind}-{size}-v{FORMAT_VERSION}.zarr'
    if kind == 'volume':
        return make_volume(path, **params)
    return make_ome_zarr(path, **params)
