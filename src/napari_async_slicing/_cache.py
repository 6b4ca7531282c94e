"""A byte-bounded LRU cache of decoded chunks, shared by all layers of a viewer.

Keys are ``(source, chunk index)``:

- *source* identifies the data a chunk came from. For a zarr array it is the array **object**
  (a unique token per object, held through a weak reference and purged when the object dies), so
  replacing ``layer.data`` — even by a freshly opened array of the same store and path — never
  serves chunks of the old data. For a dask array it is the array's ``name``: dask names are
  deterministic tokens of the graph and its inputs, so equal names mean equal data.
- "The store changed" is what napari users tell napari with ``layer.refresh()`` (and what a
  Labels layer does when painting into its data): the slicer then calls :meth:`forget` for the
  layer's arrays, which gives them a new source key and drops their chunks. Reads still in flight
  under the old key can only fill entries nobody looks up again. Changes made behind napari's back
  (another process rewriting a remote store) are not detected, as in any viewer's session cache.

``cache_bytes`` bounds the decoded bytes held (a chunk larger than the whole budget is never
cached). Chunks in flight are outside the budget: at most the read queue's reads in flight. A
chunk that is a view of a larger array (a plane whose chunks were read as one) keeps that
array: the array is counted whole, once, while any chunk of it is kept.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from itertools import count
from typing import Any

import numpy as np


class ChunkCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._by_source: dict[Hashable, set[tuple]] = {}
        #: key -> the array its chunk is a view of, for chunks put with one (``put``).
        self._views: dict[tuple, np.ndarray] = {}
        #: id(array) -> [array, chunks kept that are views of it].
        self._buffers: dict[int, list] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        #: id(array) -> (weakref to array, token) for arrays keyed by identity (zarr).
        self._tokens: dict[int, tuple[weakref.ReferenceType, int]] = {}
        #: dask name -> generation (bumped by ``forget``).
        self._generations: dict[str, int] = {}
        self._counter = count()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    # --- sources ---------------------------------------------------------------------------

    def source_key(self, array: Any) -> Hashable:
        """The key of the data ``array`` reads (see the module docstring)."""
        name = getattr(array, 'name', None)
        if isinstance(name, str) and hasattr(array, '__dask_graph__'):
            with self._lock:
                return ('dask', name, self._generations.get(name, 0))
        with self._lock:
            entry = self._tokens.get(id(array))
            if entry is not None and entry[0]() is array:
                return ('id', entry[1])
            return ('id', self._new_token(array))

    def _new_token(self, array: Any) -> int:
        token = next(self._counter)
        key = id(array)
        cache_ref = weakref.ref(self)

        def purge(_: Any = None) -> None:
            cache = cache_ref()
            if cache is not None:
                cache._purge_token(key, token)

        try:
            ref = weakref.ref(array, purge)
        except TypeError:  # not weak-referenceable: never cache by identity
            return -1 - token
        self._tokens[key] = (ref, token)
        return token

    def _purge_token(self, key: int, token: int) -> None:
        with self._lock:
            entry = self._tokens.get(key)
            if entry is not None and entry[1] == token:
                del self._tokens[key]
            self._drop_source(('id', token))

    def forget(self, arrays: Iterable[Any]) -> None:
        """The data of ``arrays`` changed: drop their chunks and key them afresh."""
        from napari_async_slicing._reading import zarr_under_dask

        arrays = [a for array in arrays for a in (array, zarr_under_dask(array)) if a is not None]
        with self._lock:
            for array in arrays:
                name = getattr(array, 'name', None)
                if isinstance(name, str) and hasattr(array, '__dask_graph__'):
                    generation = self._generations.get(name, 0)
                    self._generations[name] = generation + 1
                    self._drop_source(('dask', name, generation))
                    continue
                entry = self._tokens.pop(id(array), None)
                if entry is not None and entry[0]() is array:
                    self._drop_source(('id', entry[1]))

    def _drop_source(self, source: Hashable) -> None:
        for key in self._by_source.pop(source, ()):
            value = self._entries.pop(key, None)
            if value is not None:
                self.bytes -= self._release(key, value)

    # --- entries ---------------------------------------------------------------------------

    def get(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def peek(self, key: tuple) -> np.ndarray | None:
        """The chunk if cached (not counted as a hit or miss, recency unchanged)."""
        with self._lock:
            return self._entries.get(key)

    def __contains__(self, key: tuple) -> bool:
        with self._lock:
            return key in self._entries

    def put(self, key: tuple, value: np.ndarray, buffer: np.ndarray | None = None) -> None:
        """Keep ``value`` under ``key``; ``buffer``: the array ``value`` is a view of (counted
        whole, once for all the chunks kept that are views of it)."""
        if (value.nbytes if buffer is None else buffer.nbytes) > self.max_bytes:
            return
        value.flags.writeable = False  # shared by every reader from now on
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= self._release(key, old)
            nbytes = self._charge(key, value, buffer)
            while self._entries and self.bytes + nbytes > self.max_bytes:
                evicted_key, evicted = self._entries.popitem(last=False)
                self.bytes -= self._release(evicted_key, evicted)
                self.evictions += 1
                keys = self._by_source.get(evicted_key[0])
                if keys is not None:
                    keys.discard(evicted_key)
                    if not keys:
                        del self._by_source[evicted_key[0]]
            self._entries[key] = value
            self._by_source.setdefault(key[0], set()).add(key)
            self.bytes += nbytes

    def _charge(self, key: tuple, value: np.ndarray, buffer: np.ndarray | None) -> int:
        """The bytes that keeping ``value`` adds (lock held)."""
        if buffer is None:
            return value.nbytes
        self._views[key] = buffer
        held = self._buffers.setdefault(id(buffer), [buffer, 0])
        held[1] += 1
        return buffer.nbytes if held[1] == 1 else 0

    def _release(self, key: tuple, value: np.ndarray) -> int:
        """The bytes that dropping ``key``'s ``value`` frees (lock held)."""
        buffer = self._views.pop(key, None)
        if buffer is None:
            return value.nbytes
        held = self._buffers[id(buffer)]
        held[1] -= 1
        if held[1]:
            return 0
        del self._buffers[id(buffer)]
        return buffer.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._by_source.clear()
            self._views.clear()
            self._buffers.clear()
            self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict:
        with self._lock:
            return {
                'hits': self.hits,
                'misses': self.misses,
                'bytes': self.bytes,
                'max_bytes': self.max_bytes,
                'chunks': len(self._entries),
                'evictions': self.evictions,
            }
