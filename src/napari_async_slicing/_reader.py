"""npe2 reader: zarr / OME-Zarr paths and ``http(s)://`` URLs, opened lazily for our slicer.

``napari https://host/image.ome.zarr`` (pick "napari-async-slicing" if napari asks which reader),
``viewer.open(url, plugin='napari-async-slicing')`` or the plugin widget's "Open URL" field.
Multiscale OME-Zarr opens as one multiscale image layer (OME scale, omero window as contrast
limits) plus one labels layer per OME ``labels/<name>`` image. Only metadata is read here; chunks
are read by the slicer when planes are shown.

The reader also turns our slicer on in the viewer it opens into (``napari.current_viewer()``, the
active window: a reader is not told its viewer), so remote data never slices on the main thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from napari_async_slicing._io import is_url, open_image, open_store

LayerData = tuple[Any, dict[str, Any], str]


def looks_like_zarr(path: str) -> bool:
    """A path or URL with a ``.zarr`` part, or a local folder holding zarr metadata."""
    stripped = path.rstrip('/')
    if any(part.lower().endswith('.zarr') for part in stripped.split('/')):
        return True
    if is_url(path):
        return False
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, name)) for name in ('zarr.json', '.zgroup', '.zarray')
    )


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 ``get_reader``: our reader for one zarr path/URL, else None (napari tries others)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = os.fspath(path)
    return read_zarr if looks_like_zarr(path) else None


def read_zarr(path: str | list[str]) -> list[LayerData]:
    """Layer data for a zarr array or (multiscale) OME-Zarr image and its labels."""
    if isinstance(path, list):
        path = path[0]
    path = os.fspath(path)
    _use_our_slicer_in_current_viewer()
    data, kwargs = open_image(path)
    layers: list[LayerData] = [(data, {**kwargs, 'multiscale': isinstance(data, list)}, 'image')]
    layers.extend(_labels(path))
    return layers


def _labels(path: str) -> list[LayerData]:
    """OME-Zarr ``labels/<name>`` images as labels layers (none if the image has no labels)."""
    import zarr

    base = path.rstrip('/')
    try:
        group = zarr.open_group(store=open_store(f'{base}/labels'), mode='r')
        attrs: dict[str, Any] = dict(group.attrs)
    except (FileNotFoundError, KeyError, ValueError):
        return []
    names = attrs.get('ome', attrs).get('labels') or []
    layers: list[LayerData] = []
    for name in names:
        data, kwargs = open_image(f'{base}/labels/{name}')
        kwargs.pop('contrast_limits', None)
        layers.append((data, {**kwargs, 'multiscale': isinstance(data, list)}, 'labels'))
    return layers


def _use_our_slicer_in_current_viewer() -> None:
    import napari

    from napari_async_slicing._live import enable_in

    viewer = napari.current_viewer()
    if viewer is not None:
        enable_in(viewer)
