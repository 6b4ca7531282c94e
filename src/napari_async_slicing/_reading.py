"""Cancellable, retrying reads of the arrays users hand to napari.

A slice request runs on a worker thread with a :class:`CancelToken` bound to that thread
(:func:`bound_token`). Data access goes through :class:`LazySource`, which composes napari's
indexing lazily and reads only when napari materialises it (``np.asarray``):

- zarr v3 arrays are read through zarr's async API on zarr's own event loop, so cancelling the
  token cancels the in-flight chunk requests;
- dask arrays are computed with a callback that stops issuing chunk tasks once cancelled;
- anything else (numpy, plugin array-likes) is indexed directly, checking the token before.

Transient failures (HTTP 5xx, timeouts, dropped connections) are retried with bounded backoff
before the error reaches the user.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np


class SliceCancelled(Exception):
    """Raised inside a worker when its request was superseded or the slicer shut down."""


class CancelToken:
    """A one-way flag plus callbacks to run on cancel (e.g. cancelling zarr futures)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], Any]] = []

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise SliceCancelled

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early (and raising) if cancelled."""
        if self._event.wait(seconds):
            raise SliceCancelled

    @contextmanager
    def on_cancel(self, callback: Callable[[], Any]) -> Iterator[None]:
        """Run ``callback`` if the token is cancelled while inside the block."""
        with self._lock:
            run_now = self._event.is_set()
            if not run_now:
                self._callbacks.append(callback)
        if run_now:
            callback()
        try:
            yield
        finally:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)


_NEVER = CancelToken()
_local = threading.local()


def current_token() -> CancelToken:
    """The token bound to this thread by :func:`bound_token`, or one that is never cancelled."""
    return getattr(_local, 'token', None) or _NEVER


@contextmanager
def bound_token(token: CancelToken) -> Iterator[None]:
    """Bind ``token`` to this thread while a request runs."""
    previous = getattr(_local, 'token', None)
    _local.token = token
    try:
        yield
    finally:
        _local.token = previous


# --- retry ---------------------------------------------------------------------------------

RETRY_ATTEMPTS = 4
RETRY_BASE_DELAY = 0.1  # seconds; doubles each attempt, with jitter
RETRY_MAX_DELAY = 2.0


def is_transient(exc: BaseException) -> bool:
    """HTTP 5xx, timeouts and dropped connections; never 404s or decoding errors."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, FileNotFoundError | PermissionError | SliceCancelled):
            return False
        status = getattr(exc, 'status', None) or getattr(exc, 'status_code', None)
        if isinstance(status, int):
            return status >= 500 or status in (408, 429)
        if isinstance(exc, TimeoutError | asyncio.TimeoutError | ConnectionError):
            return True
        name = type(exc).__name__
        if name in {
            'ServerDisconnectedError',
            'ClientConnectionError',
            'ClientOSError',
            'ClientPayloadError',
            'ServerTimeoutError',
            'ClientConnectorError',
        }:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def with_retry(read: Callable[[], Any], token: CancelToken) -> Any:
    """Call ``read``; retry transient failures with bounded, cancellable backoff."""
    for attempt in range(RETRY_ATTEMPTS):
        token.raise_if_cancelled()
        try:
            return read()
        except SliceCancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below
            if attempt == RETRY_ATTEMPTS - 1 or not is_transient(exc):
                raise
            delay = min(RETRY_MAX_DELAY, RETRY_BASE_DELAY * 2**attempt)
            token.sleep(delay * (0.5 + random.random()))
    raise AssertionError('unreachable')  # pragma: no cover


# --- reading each kind of array ------------------------------------------------------------


def _is_zarr_array(array: Any) -> bool:
    try:
        import zarr
    except ImportError:  # pragma: no cover
        return False
    return isinstance(array, zarr.Array)


def _is_dask_array(array: Any) -> bool:
    try:
        import dask.array as da
    except ImportError:  # pragma: no cover
        return False
    return isinstance(array, da.Array)


def _read_zarr(array: Any, selection: tuple, token: CancelToken) -> np.ndarray:
    from napari_async_slicing._napari_compat import zarr_event_loop

    def read() -> np.ndarray:
        future = asyncio.run_coroutine_threadsafe(
            array.async_array.getitem(selection), zarr_event_loop()
        )
        with token.on_cancel(future.cancel):
            try:
                return np.asarray(future.result())
            except concurrent.futures.CancelledError:
                raise SliceCancelled from None

    return with_retry(read, token)


def _dask_pretask(key: Any, dsk: Any, state: Any) -> None:
    current_token().raise_if_cancelled()


#: dask callback tuple (start, start_state, pretask, posttask, finish): stop issuing chunk tasks
#: once the calling thread's token is cancelled. Passed to each compute explicitly: dask's global
#: callbacks are swapped out (``Callback.active = set()``) while any compute runs, so a globally
#: registered callback misses computes that overlap another one.
_DASK_CANCEL_CALLBACKS = [(None, None, _dask_pretask, None, None)]


def _read_dask(array: Any, token: CancelToken) -> np.ndarray:
    import dask
    from dask import local, threaded

    scheduler = dask.base.get_scheduler(collections=[array])
    # Local schedulers run ``pretask`` in the thread driving the compute (this worker), where our
    # token is bound; other schedulers (e.g. distributed) do not take ``callbacks``.
    local_getters = {threaded.get, local.get_sync}
    try:
        from dask import multiprocessing

        local_getters.add(multiprocessing.get)
    except ImportError:  # pragma: no cover - needs cloudpickle
        pass
    kwargs = {'callbacks': _DASK_CANCEL_CALLBACKS} if scheduler in local_getters else {}
    return with_retry(lambda: np.asarray(array.compute(**kwargs)), token)


def read(array: Any, selection: tuple, token: CancelToken | None = None) -> np.ndarray:
    """Read ``array[selection]`` as numpy, cancellably and with retries."""
    token = token or current_token()
    token.raise_if_cancelled()
    if _is_zarr_array(array):
        return _read_zarr(array, selection, token)
    if _is_dask_array(array):
        return _read_dask(array[selection], token)
    return with_retry(lambda: np.asarray(array[selection]), token)


# --- lazy indexing -------------------------------------------------------------------------


class LazySource:
    """An array-like that records indexing and reads only when materialised.

    napari's slice requests index their data (``data[slices]``), sometimes in two steps, then call
    ``np.asarray``. Wrapping the data in a ``LazySource`` keeps napari's slicing logic unchanged
    while routing the actual read through :func:`read`.
    """

    __slots__ = ('array', '_index')

    def __init__(self, array: Any, index: tuple[range | int, ...] | None = None) -> None:
        self.array = array
        self._index = (
            tuple(range(n) for n in array.shape) if index is None else index
        )

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(i) for i in self._index if isinstance(i, range))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> LazySource:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            at = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = (slice(None),) * (self.ndim - len(key) + 1)
            key = key[:at] + fill + key[at + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        if len(key) != self.ndim:
            raise IndexError(f'too many indices: {len(key)} for {self.ndim} dims')
        keys = iter(key)
        new: list[range | int] = []
        for current in self._index:
            if isinstance(current, int):
                new.append(current)
                continue
            k = next(keys)
            if isinstance(k, slice):
                new.append(current[k])
            elif isinstance(k, int | np.integer):
                new.append(current[int(k)])
            else:
                raise TypeError(f'LazySource supports ints and slices, not {type(k).__name__}')
        return LazySource(self.array, tuple(new))

    def selection(self) -> tuple[slice | int, ...]:
        out: list[slice | int] = []
        for i in self._index:
            if isinstance(i, int):
                out.append(i)
            elif len(i) == 0:
                out.append(slice(0, 0))
            else:
                out.append(slice(i.start, i[-1] + 1, i.step))
        return tuple(out)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = read(self.array, self.selection())
        return data if dtype is None else data.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f'LazySource({type(self.array).__name__}, selection={self.selection()})'
