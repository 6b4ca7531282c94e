"""Deterministic sample volumes whose planes can be told apart.

Voxel values follow :func:`plane_value`::

    value(z, y, x) = (64 * z + ((y // 4) + 2 * (x // 4)) % 64) % 65536

The low six bits form a diagonal stripe pattern (0..63, equal to 0 at the
origin) that makes every plane non-constant; the remaining bits encode ``z``.
Plane ``z`` is therefore identified by ``value(z, 0, 0) // 64`` for ``z < 1024``.
Multiscale level ``k`` keeps Z and subsamples Y and X: its plane ``z`` is the
level-0 plane ``z`` sliced ``[::2**k, ::2**k]``.
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
    "cache_dir",
    "expected_plane",
    "make_ome_zarr",
    "make_volume",
    "plane_value",
    "sample_data",
    "which_plane",
]

#: Bumped whenever the generated content changes, so stale caches are ignored.
FORMAT_VERSION = 1
_MARKER_KEY = "napari_async_slicing_sample"
_SLAB_BYTES = 64 * 2**20

#: Shapes and chunks used by :func:`sample_data`.
SAMPLE_SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "volume": {
        "tiny": {"shape": (12, 64, 64), "chunks": (1, 32, 32)},
        "small": {"shape": (50, 512, 512), "chunks": (1, 256, 256)},
        "s1": {"shape": (200, 1024, 1024), "chunks": (1, 512, 512)},
    },
    "ome": {
        "tiny": {"shape": (6, 128, 128), "chunks": (1, 64, 64), "levels": 4},
        "small": {"shape": (32, 1024, 1024), "chunks": (1, 256, 256), "levels": 4},
        "s1": {"shape": (64, 2048, 2048), "chunks": (1, 256, 256), "levels": 4},
    },
}


def plane_value(z: npt.ArrayLike, y: npt.ArrayLike, x: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    """Return the sample value at level-0 coordinates ``(z, y, x)`` (broadcasting)."""
    zi = np.asarray(z, dtype=np.int64)
    yi = np.asarray(y, dtype=np.int64)
    xi = np.asarray(x, dtype=np.int64)
    pattern = ((yi // 4) + 2 * (xi // 4)) % 64
    return ((64 * zi + pattern) % 65536).astype(np.uint16)


def _level_plane(
    z: npt.ArrayLike, ny: int, nx: int, level: int, y0: int = 0, x0: int = 0
) -> npt.NDArray[np.uint16]:
    """Values of the ``(ny, nx)`` block at level-``level`` offset ``(y0, x0)``."""
    step = 2**level
    ys = (y0 + np.arange(ny, dtype=np.int64)) * step
    xs = (x0 + np.arange(nx, dtype=np.int64)) * step
    zs = np.asarray(z, dtype=np.int64)
    return plane_value(zs[..., None, None], ys[:, None], xs[None, :])


def _level_shape(shape: tuple[int, int, int], level: int) -> tuple[int, int, int]:
    step = 2**level
    return (shape[0], math.ceil(shape[1] / step), math.ceil(shape[2] / step))


def expected_plane(
    shape: tuple[int, ...], z: int, dtype: npt.DTypeLike = np.uint16, *, level: int = 0
) -> npt.NDArray[Any]:
    """Return plane ``z`` of a generated volume with level-0 ``shape`` (Z, Y, X).

    With ``level=k`` the plane of multiscale level ``k`` is returned, of shape
    ``(ceil(Y / 2**k), ceil(X / 2**k))``.
    """
    if len(shape) != 3:
        raise ValueError(f"shape must be (Z, Y, X), got {shape!r}")
    nz = shape[0]
    if not 0 <= z < nz:
        raise IndexError(f"plane {z} out of range for {nz} planes")
    _, ny, nx = _level_shape((shape[0], shape[1], shape[2]), level)
    return _level_plane(z, ny, nx, level).astype(dtype)


def which_plane(array2d: npt.ArrayLike, *, level: int = 0) -> int | None:
    """Return the plane index whose level-``level`` plane equals ``array2d`` exactly.

    ``array2d`` must be a whole plane (starting at the origin). Returns ``None``
    if it matches no plane.
    """
    arr = np.asarray(array2d)
    if arr.ndim != 2 or arr.size == 0:
        return None
    first = arr.flat[0]
    if not np.isfinite(first) or first < 0 or first != int(first):
        return None
    z = int(first) // 64
    expected = _level_plane(z, arr.shape[0], arr.shape[1], level)
    return z if np.array_equal(arr, expected) else None


def cache_dir() -> Path:
    """Return the sample-data cache directory (``$NAPARI_ASYNC_SLICING_CACHE``)."""
    env = os.environ.get("NAPARI_ASYNC_SLICING_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "napari-async-slicing"
    return base.expanduser()


def _marker(kind: str, **params: Any) -> dict[str, Any]:
    return {"kind": kind, "version": FORMAT_VERSION, **json.loads(json.dumps(params))}


def _existing_marker(path: Path) -> dict[str, Any] | None:
    """Return the generator marker stored in ``path/zarr.json``, if readable."""
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    attrs = meta.get("attributes") or {}
    marker = attrs.get(_MARKER_KEY)
    return marker if isinstance(marker, dict) else None


def _build_atomically(path: Path, marker: dict[str, Any], build: Callable[[Path], None], overwrite: bool) -> Path:
    """Build into a temporary sibling and rename it to ``path``.

    Existing data carrying the same ``marker`` is reused unless ``overwrite``.
    Concurrent builders of the same ``path`` are safe: the first rename wins.
    """
    path = Path(path).expanduser().absolute()
    if path.exists() and not overwrite:
        if _existing_marker(path) == marker:
            return path
        raise FileExistsError(f"{path} exists with different content; pass overwrite=True")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
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


def _fill(arr: zarr.Array, level: int) -> None:
    """Fill a 3D array with level-``level`` :func:`plane_value` data, slab by slab."""
    nz, ny, nx = arr.shape
    dtype = arr.dtype
    for z0, z1 in _slabs(nz, arr.chunks[0], ny * nx * dtype.itemsize):
        arr[z0:z1] = _level_plane(np.arange(z0, z1), ny, nx, level).astype(dtype)


def make_volume(
    path: str | os.PathLike[str],
    shape: tuple[int, int, int] = (200, 1024, 1024),
    chunks: tuple[int, int, int] = (1, 512, 512),
    dtype: npt.DTypeLike = "uint16",
    overwrite: bool = False,
) -> Path:
    """Write a zarr v3 array of :func:`plane_value` data at ``path`` and return it.

    Data is written in chunk-aligned slabs (bounded memory). An existing array
    generated with the same shape, chunks and dtype is reused.
    """
    shape3 = _as_3tuple(shape, "shape")
    chunks3 = _as_3tuple(chunks, "chunks")
    np_dtype = np.dtype(dtype)
    marker = _marker("volume", shape=shape3, chunks=chunks3, dtype=np_dtype.str)

    def build(tmp: Path) -> None:
        arr = zarr.create_array(
            tmp, shape=shape3, chunks=_clip_chunks(chunks3, shape3), dtype=np_dtype, zarr_format=3,
            attributes={_MARKER_KEY: marker}, dimension_names=["z", "y", "x"],
        )
        _fill(arr, 0)

    return _build_atomically(Path(path), marker, build, overwrite)


def _axes() -> list[dict[str, str]]:
    return [{"name": ax, "type": "space", "unit": "micrometer"} for ax in ("z", "y", "x")]


def _multiscale(name: str, levels: int, base_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> dict[str, Any]:
    datasets = [
        {
            "path": str(k),
            "coordinateTransformations": [
                {"type": "scale", "scale": [base_scale[0], base_scale[1] * 2**k, base_scale[2] * 2**k]}
            ],
        }
        for k in range(levels)
    ]
    return {"name": name, "axes": _axes(), "datasets": datasets}


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
    dtype: npt.DTypeLike = "uint16",
    labels: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write an OME-Zarr 0.5 multiscale image group at ``path`` and return it.

    Levels ``"0"``..``str(levels - 1)`` halve Y and X (Z kept); level ``k`` holds
    ``expected_plane(shape, z, level=k)``. With ``labels`` a single-level uint32
    label image ``labels/cells`` is added on the coarsest level's grid.
    """
    shape3 = _as_3tuple(shape, "shape")
    chunks3 = _as_3tuple(chunks, "chunks")
    if levels < 1:
        raise ValueError("levels must be >= 1")
    np_dtype = np.dtype(dtype)
    marker = _marker("ome", shape=shape3, chunks=chunks3, levels=levels, dtype=np_dtype.str, labels=labels)
    vmax = int(plane_value(shape3[0] - 1, 0, 0)) + 63
    ome = {
        "version": "0.5",
        "multiscales": [_multiscale("image", levels)],
        "omero": {
            "channels": [
                {
                    "label": "sample",
                    "color": "FFFFFF",
                    "active": True,
                    "window": {"start": 0, "end": vmax, "min": 0, "max": int(np.iinfo(np.uint16).max)},
                }
            ],
            "rdefs": {"model": "greyscale", "defaultZ": shape3[0] // 2},
        },
    }

    def build(tmp: Path) -> None:
        root = zarr.create_group(tmp, zarr_format=3, attributes={"ome": ome, _MARKER_KEY: marker})
        for k in range(levels):
            kshape = _level_shape(shape3, k)
            arr = root.create_array(
                str(k), shape=kshape, chunks=_clip_chunks(chunks3, kshape), dtype=np_dtype,
                dimension_names=["z", "y", "x"],
            )
            _fill(arr, k)
        if labels:
            _write_labels(root, shape3, chunks3, levels)

    return _build_atomically(Path(path), marker, build, overwrite)


def _write_labels(root: zarr.Group, shape: tuple[int, int, int], chunks: tuple[int, int, int], levels: int) -> None:
    coarse = levels - 1
    lshape = _level_shape(shape, coarse)
    lgroup = root.create_group("labels", attributes={"ome": {"version": "0.5", "labels": ["cells"]}})
    cells_attrs = {
        "ome": {
            "version": "0.5",
            "image-label": {"source": {"image": "../../"}},
            "multiscales": [_multiscale("cells", 1, (1.0, float(2**coarse), float(2**coarse)))],
        }
    }
    cells = lgroup.create_group("cells", attributes=cells_attrs)
    arr = cells.create_array(
        "0", shape=lshape, chunks=_clip_chunks(chunks, lshape), dtype="uint32", dimension_names=["z", "y", "x"]
    )
    arr[:] = _cells(*lshape)


def _as_3tuple(value: tuple[int, ...], name: str) -> tuple[int, int, int]:
    if len(value) != 3 or any(int(v) <= 0 for v in value):
        raise ValueError(f"{name} must be three positive ints (Z, Y, X), got {value!r}")
    return (int(value[0]), int(value[1]), int(value[2]))


def sample_data(kind: str, size: str = "small") -> Path:
    """Build (or reuse) a cached sample and return its path.

    ``kind`` is ``"volume"`` (plain zarr v3 array, see :func:`make_volume`) or
    ``"ome"`` (OME-Zarr group, see :func:`make_ome_zarr`); ``size`` is one of
    ``"tiny"``, ``"small"``, ``"s1"`` (see ``SAMPLE_SIZES``).
    """
    try:
        params = SAMPLE_SIZES[kind][size]
    except KeyError:
        raise ValueError(
            f"unknown sample {kind!r}/{size!r}; kinds: {sorted(SAMPLE_SIZES)}, sizes: {sorted(SAMPLE_SIZES['volume'])}"
        ) from None
    path = cache_dir() / f"{kind}-{size}-v{FORMAT_VERSION}.zarr"
    if kind == "volume":
        return make_volume(path, **params)
    return make_ome_zarr(path, **params)
