"""Tracks: the current time and the layer thumbnail computed off the main thread.

napari 0.9 slices Tracks synchronously. A time step changes only ``current_time`` (the tail/head
time window is applied by vispy's shader filters from it), but napari's refresh recomputes the
layer extent (min/max over all track data) and a thumbnail from the track vertices on the main
thread for every step, which for tens of thousands of points costs more than a frame. Here a
worker computes both from the request's arrays and :func:`apply` stores the new slice input and
thumbnail and emits napari's ``set_data`` (vispy then updates the shaders' current time).

The request holds the track manager's arrays by reference: napari replaces them (never writes
into them) when tracks, graph or colours change, so an in-flight request keeps the values it was
submitted with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_async_slicing import _napari_compat as compat


def _tracks_type() -> type:
    from napari.layers import Tracks

    return Tracks


def handles_layer(layer: Any) -> bool:
    """Exactly napari's Tracks (subclasses from plugins keep napari's own slicing)."""
    return type(layer) is _tracks_type()


def can_slice(layer: Any, dims: Any) -> bool:
    return True


@dataclass(frozen=True, eq=False)
class TracksSliceResponse:
    request_id: int
    slice_input: Any
    units: Any
    current_time: Any
    thumbnail: np.ndarray


@dataclass(frozen=True, eq=False)
class TracksSliceRequest:
    id: int
    slice_input: Any
    units: Any
    current_time: Any
    data: np.ndarray | None
    track_vertices: np.ndarray | None
    track_colors: np.ndarray | None
    head_length: int
    tail_length: int
    opacity: float
    thumbnail_shape: tuple[int, ...]
    max_thumbnail_tracks: int

    def __call__(self) -> TracksSliceResponse:
        return TracksSliceResponse(
            request_id=self.id,
            slice_input=self.slice_input,
            units=self.units,
            current_time=self.current_time,
            thumbnail=self._thumbnail(),
        )

    def same_as(self, other: Any) -> bool:
        return (
            type(other) is type(self)
            and all(
                getattr(other, name) is getattr(self, name)
                for name in ('data', 'track_vertices', 'track_colors')
            )
            and (other.head_length, other.tail_length, other.opacity, other.units)
            == (self.head_length, self.tail_length, self.opacity, self.units)
            and other.slice_input.ndisplay == self.slice_input.ndisplay
            and tuple(other.slice_input.order) == tuple(self.slice_input.order)
            and np.array_equal(
                other.slice_input.world_slice.as_array(),
                self.slice_input.world_slice.as_array(),
                equal_nan=True,
            )
        )

    def _view_data(self) -> np.ndarray | None:
        """``_TracksSlicingState._pad_display_data(track_vertices)``."""
        if self.track_vertices is None:
            return None
        data = self.track_vertices[:, list(self.slice_input.displayed)]
        if self.slice_input.ndisplay == 2:
            data = np.pad(data, ((0, 0), (0, 1)), 'constant')
            return data[:, (1, 0, 2)]
        return data[:, (2, 1, 0)]

    def _thumbnail(self) -> np.ndarray:
        """``Tracks._update_thumbnail`` for this request's time (before the uint8 conversion)."""
        colormapped = np.zeros(self.thumbnail_shape)
        colormapped[..., 3] = 1
        view_data = self._view_data()
        if (
            view_data is not None
            and self.track_colors is not None
            and self.data is not None
            and len(self.data)
        ):
            extrema = np.vstack([np.min(self.data, axis=0), np.max(self.data, axis=0)])[:, 1:]
            shown = list(self.slice_input.displayed)
            min_vals = [extrema[0, i] for i in shown]
            shape = np.ceil([extrema[1, i] - extrema[0, i] + 1 for i in shown]).astype(int)
            zoom_factor = np.divide(self.thumbnail_shape[:2], shape[-2:]).min()
            if len(view_data) > self.max_thumbnail_tracks:
                indices = np.random.randint(0, len(view_data), self.max_thumbnail_tracks)
            else:
                indices = np.arange(len(view_data))
            points = view_data[indices]
            coords = np.floor((points[:, :2] - min_vals[1:] + 0.5) * zoom_factor).astype(int)
            coords = np.clip(coords, 0, np.subtract(self.thumbnail_shape[:2], 1))
            colors = np.asarray(self.track_colors)[indices]
            times = np.asarray(self.track_vertices)[indices, 0]
            alpha = (self.head_length + self.current_time - times) / (self.tail_length + self.head_length)
            alpha[times > self.current_time] = 1.0
            colors[:, -1] = np.clip(1.0 - alpha, 0.0, 1.0)
            colormapped[coords[:, 1], coords[:, 0]] = colors
        colormapped[..., 3] *= self.opacity
        colormapped[np.isnan(colormapped)] = 0
        return colormapped.astype(np.uint8)


def _current_time(manager: Any, point: Any) -> Any:
    """``Tracks.current_time`` for a data point."""
    time_step = point[0]
    if isinstance(time_step, slice):
        return manager.max_time
    return time_step


def make_request(layer: Any, dims: Any) -> TracksSliceRequest:
    """Main thread, O(1): slice input, current time and references to the track arrays."""
    slice_input = compat.make_slice_input(layer, dims)
    manager = compat.track_manager(layer)
    return TracksSliceRequest(
        id=compat.next_request_id(),
        slice_input=slice_input,
        units=dims.units,
        current_time=_current_time(manager, compat.data_point(layer, slice_input, dims)),
        data=manager.data,
        track_vertices=manager.track_vertices,
        track_colors=layer.track_colors,
        head_length=layer.head_length,
        tail_length=layer.tail_length,
        opacity=layer.opacity,
        thumbnail_shape=compat.thumbnail_shape(layer),
        max_thumbnail_tracks=compat.tracks_max_thumbnail(layer),
    )


def update_thumbnail(layer: Any, response: TracksSliceResponse) -> None:
    layer.thumbnail = response.thumbnail


def apply(layer: Any, response: TracksSliceResponse, thumbnail: bool = True) -> None:
    """Main thread: store slice input and thumbnail; vispy reads the new current time."""
    compat.set_slice_input(layer, response.slice_input, response.units)
    displayed = response.slice_input.displayed
    if displayed != compat.tracks_displayed_dims(layer):
        # ndisplay/order changed: napari rebuilds the track buffers for the new displayed dims.
        compat.tracks_set_displayed_dims(layer, displayed)
    if thumbnail:
        layer.thumbnail = response.thumbnail
    layer.events.set_data()
