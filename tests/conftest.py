"""Shared fixtures: our slicer enabled, a real viewer, and zarr served over real HTTP on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import napari_async_slicing
from napari_async_slicing.testing import ZarrHTTPServer, make_volume, open_remote_array

pytest_plugins = ("pytester",)

SHAPE = (12, 64, 64)
CHUNKS = (1, 32, 32)


@pytest.fixture
def slicer_enabled() -> Iterator[None]:
    with napari_async_slicing.enabled():
        yield


@pytest.fixture
def viewer(slicer_enabled, make_napari_viewer):
    """A shown napari viewer using our slicer."""
    v = make_napari_viewer(show=True)
    from napari_async_slicing.components._layer_slicer import AsyncLayerSlicer

    assert isinstance(v._layer_slicer, AsyncLayerSlicer)
    return v


@pytest.fixture
def viewer_with(make_napari_viewer):
    """``viewer_with(**options)``: a shown viewer whose slicer uses these options."""
    from contextlib import ExitStack

    with ExitStack() as stack:

        def make(**options):
            stack.enter_context(napari_async_slicing.enabled(**options))
            return make_napari_viewer(show=True)

        yield make


@pytest.fixture(scope='session')
def volume_path(tmp_path_factory) -> Path:
    return make_volume(tmp_path_factory.mktemp('data') / 'volume.zarr', shape=SHAPE, chunks=CHUNKS)


@pytest.fixture
def server(volume_path) -> Iterator[ZarrHTTPServer]:
    """HTTP server over the test volume; tests set latency/failures with ``server.configure``."""
    with ZarrHTTPServer(volume_path.parent, max_seconds=300) as srv:
        yield srv


@pytest.fixture
def remote_volume(server):
    """The test volume as a zarr array read over HTTP (fsspec)."""
    return open_remote_array(server.url_for('volume.zarr'))


@pytest.fixture
def errors(monkeypatch) -> list:
    """Error notifications napari would show (our message-only ones, and exceptions napari
    would format), collected instead."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    received: list = []
    dispatch = notification_manager.dispatch

    def collect(notification):
        if notification.severity >= NotificationSeverity.ERROR:
            received.append(notification)
        else:
            dispatch(notification)

    monkeypatch.setattr(notification_manager, 'dispatch', collect)
    monkeypatch.setattr(
        notification_manager,
        'receive_error',
        lambda exctype, value, tb, thread=None: received.append(value),
    )
    return received


def slicer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith('napari-async-slicing')]


def vispy_data(viewer, layer) -> np.ndarray:
    """The array napari last handed to the layer's vispy node."""
    from napari_async_slicing._napari_compat import vispy_node

    node = vispy_node(viewer, layer)
    return np.asarray(node._last_data if hasattr(node, '_last_data') else node._data)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Whether ``predicate`` became true within ``timeout`` seconds (polled, no Qt events)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def count_loop_calls(monkeypatch, loop) -> list[tuple[Callable, threading.Thread]]:
    """Record each call other threads make into ``loop`` (each one wakes it): the callback, and
    the thread that made it."""
    calls: list[tuple[Callable, threading.Thread]] = []
    real = loop.call_soon_threadsafe

    def counting(*args, **kwargs):
        calls.append((args[0], threading.current_thread()))
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, 'call_soon_threadsafe', counting)
    return calls
