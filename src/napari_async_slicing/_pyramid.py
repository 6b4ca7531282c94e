"""The coarsest level of a single-scale zarr array that is one level of an OME-Zarr pyramid.

A user may open one level of an OME-Zarr image on its own (``add_image(group['0'])``); napari
then knows nothing of the others. The slicer can still show the coarse level of a new plane first
(see ``layers._slice._scalar_field``). The group's metadata is read once per array, on a worker.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any

from napari_async_slicing._reading import SliceCancelled

#: id(array) -> (weak reference to the array, (coarsest level, downsampling per axis) or None).
_found: dict[int, tuple[weakref.ReferenceType, Any]] = {}
_lock = threading.Lock()


#: What :func:`known_coarsest_level` returns for an array not looked up yet.
UNKNOWN = object()


def known_coarsest_level(array: Any) -> Any:
    """:func:`coarsest_level` if already looked up for ``array`` (no I/O), else ``UNKNOWN``."""
    with _lock:
        hit = _found.get(id(array))
    if hit is not None and hit[0]() is array:
        return hit[1]
    return UNKNOWN


def coarsest_level(array: Any) -> tuple[Any, tuple[float, ...]] | None:
    """``(coarsest level, downsampling per axis)`` if ``array`` is a finer level of an OME-Zarr
    multiscale image, else None. Reads the parent group's metadata the first time (I/O)."""
    from napari_async_slicing._reading import is_zarr_array

    if not is_zarr_array(array):
        return None
    known = known_coarsest_level(array)
    if known is not UNKNOWN:
        return known
    key = id(array)
    try:
        result = _look_up(array)
    except SliceCancelled:
        raise  # looked up again next time
    except Exception:  # noqa: BLE001 - no parent group, no metadata, no access: no preview
        result = None

    def forget(_: Any, key: int = key) -> None:
        with _lock:
            _found.pop(key, None)

    with _lock:
        _found[key] = (weakref.ref(array, forget), result)
    return result


def _parent_group(array: Any) -> tuple[dict, str] | tuple[None, None]:
    """``(how to open the parent group, this array's name in it)``."""
    from zarr.storage import FsspecStore, LocalStore

    store_path = array.store_path
    path = store_path.path.rstrip('/')
    if path:  # opened through its group: the parent is in the same store
        parent, _, name = path.rpartition('/')
        return {'store': store_path.store, 'path': parent}, name
    store = store_path.store  # opened on its own: a store one level up
    if isinstance(store, LocalStore):
        root = Path(store.root)
        return {'store': LocalStore(root.parent, read_only=True)}, root.name
    if isinstance(store, FsspecStore):
        parent, _, name = store.path.rstrip('/').rpartition('/')
        if parent:
            up = FsspecStore(store.fs, path=parent, read_only=True)
            return {'store': up}, name
    return None, None


def _look_up(array: Any) -> tuple[Any, tuple[float, ...]] | None:
    """The metadata is read on the IO loop, cancelled with the bound token (a close does not
    wait for it)."""
    from napari_async_slicing._reading import current_token, run_sync

    opening, name = _parent_group(array)
    if opening is None or name is None:
        return None
    return run_sync(_look_up_async(array, opening, name), current_token())


async def _look_up_async(array: Any, opening: dict, name: str) -> tuple[Any, tuple[float, ...]] | None:
    import zarr
    from zarr.api.asynchronous import open_group

    group = await open_group(**opening, mode='r')
    attrs = dict(group.attrs)
    multiscales = attrs.get('ome', attrs).get('multiscales') or []
    if not multiscales:
        return None
    paths = [str(d['path']) for d in multiscales[0].get('datasets', [])]
    if name not in paths or paths.index(name) == len(paths) - 1:
        return None  # not a level of this pyramid, or already the coarsest
    level = await group.getitem(paths[-1])
    if not isinstance(level, zarr.AsyncArray):
        return None
    coarse = zarr.Array(level)
    if coarse.ndim != array.ndim:
        return None
    factors = tuple(a / c for a, c in zip(array.shape, coarse.shape, strict=True))
    if any(f < 1 for f in factors) or all(f == 1 for f in factors):
        return None
    return coarse, factors
