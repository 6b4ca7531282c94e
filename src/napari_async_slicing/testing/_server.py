"""Threaded HTTP server for zarr directories with latency and failure injection."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import random
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from napari_async_slicing.testing._responses import is_metadata_path, respond

__all__ = ['ZarrHTTPServer']

FAILURE_MODES: tuple[str, ...] = ('500', 'stall', 'corrupt')
LOG_MAXLEN = 100_000
_ALLOWED_HOSTS = ('127.0.0.1', 'localhost')
_IDLE_TIMEOUT = 30.0  # seconds an idle keep-alive connection is kept open
_JOIN_TIMEOUT = 5.0


@dataclasses.dataclass(frozen=True)
class _Config:
    latency: float = 0.0
    jitter: float = 0.0
    bandwidth: float | None = None
    failure_rate: float = 0.0
    failure_mode: str = '500'
    stall_seconds: float = 30.0

    def __post_init__(self) -> None:
        for name in ('latency', 'jitter', 'stall_seconds'):
            if getattr(self, name) < 0:
                raise ValueError(f'{name} must be >= 0')
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError('bandwidth must be > 0 or None')
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError('failure_rate must be in [0, 1]')
        if self.failure_mode not in FAILURE_MODES:
            raise ValueError(f'failure_mode must be one of {FAILURE_MODES}')


_SETTINGS = tuple(f.name for f in dataclasses.fields(_Config))


def _counter(name: str, doc: str) -> property:
    """A read-only counter of the server."""
    return property(lambda self: getattr(self, name), doc=doc)


def _setting(name: str) -> property:
    """A property reading the current config and writing through ``configure``."""

    def fget(self: ZarrHTTPServer) -> Any:
        return getattr(self._config, name)

    def fset(self: ZarrHTTPServer, value: Any) -> None:
        self.configure(**{name: value})

    return property(fget, fset, doc=f'Current ``{name}`` setting (thread-safe).')


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # ZarrHTTPServer joins handler threads with a bound
    request_queue_size = 128  # listen backlog; the default 5 drops bursts of connects

    def __init__(self, address: tuple[str, int], owner: ZarrHTTPServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # Skip HTTPServer.server_bind's socket.getfqdn(), which may do a DNS lookup.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        self.owner._register_connection(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.owner._unregister_connection(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet; connection errors are expected when clients or stop() cut in."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'ZarrHTTPServer/1'
    timeout = _IDLE_TIMEOUT
    # Headers and body go out in separate writes; with Nagle's algorithm on, the body waits for
    # the client's delayed ACK of the headers (~40 ms on Linux), which no real object store adds.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Per-request logging is disabled; see ``ZarrHTTPServer.log``."""

    def do_GET(self) -> None:
        self.server.owner._serve(self, head=False)

    def do_HEAD(self) -> None:
        self.server.owner._serve(self, head=True)


class ZarrHTTPServer:
    """Serve a directory (e.g. zarr v3 / OME-Zarr) over HTTP on 127.0.0.1.

    Every request waits ``latency + uniform(0, jitter)`` seconds. Bodies are
    paced to ``bandwidth`` bytes/s per response if set. Chunk requests (paths
    that are neither zarr metadata documents nor directories) fail with probability ``failure_rate``
    according to ``failure_mode``: ``"500"`` answers HTTP 500, ``"stall"``
    holds the connection for ``stall_seconds`` (or until :meth:`stop`) and
    closes it without sending anything, ``"corrupt"`` answers 200 with random
    bytes of the right length. The server stops itself after ``max_seconds``
    or once ``max_requests`` requests were received. Settings can be changed
    at any time through attributes or :meth:`configure`.
    """

    latency = _setting('latency')
    jitter = _setting('jitter')
    bandwidth = _setting('bandwidth')
    failure_rate = _setting('failure_rate')
    failure_mode = _setting('failure_mode')
    stall_seconds = _setting('stall_seconds')

    def __init__(
        self,
        root: str | Path,
        *,
        latency: float = 0.0,
        jitter: float = 0.0,
        bandwidth: float | None = None,
        failure_rate: float = 0.0,
        failure_mode: str = '500',
        stall_seconds: float = 30.0,
        max_seconds: float = 900.0,
        max_requests: int = 1_000_000,
        seed: int | None = 0,
        port: int = 0,
        host: str = '127.0.0.1',
    ) -> None:
        if host not in _ALLOWED_HOSTS:
            raise ValueError(f'ZarrHTTPServer only binds 127.0.0.1, not {host!r}')
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f'root {self.root} is not a directory')
        if max_seconds <= 0 or max_requests <= 0:
            raise ValueError('max_seconds and max_requests must be > 0')
        self.max_seconds = float(max_seconds)
        self.max_requests = int(max_requests)
        self._port = int(port)
        self._config = _Config(latency, jitter, bandwidth, failure_rate, failure_mode, stall_seconds)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._stopping = threading.Event()  # set once shutdown begins; wakes sleepers
        self._stopped = threading.Event()
        self._wake_watchdog = threading.Event()
        self._stop_called = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._connections: dict[socket.socket, threading.Thread] = {}
        self.stop_reason: str | None = None
        self._log: collections.deque[dict[str, Any]] = collections.deque(maxlen=LOG_MAXLEN)
        self._total_requests = 0  # never reset; compared with max_requests
        self._zero_counters()

    # -- configuration -------------------------------------------------------

    def configure(self, **settings: Any) -> None:
        """Atomically change any of latency, jitter, bandwidth, failure_rate,
        failure_mode, stall_seconds. Affects requests that arrive afterwards."""
        unknown = set(settings) - set(_SETTINGS)
        if unknown:
            raise TypeError(f'unknown settings: {sorted(unknown)}')
        with self._lock:
            self._config = dataclasses.replace(self._config, **settings)

    # -- counters ------------------------------------------------------------

    def _zero_counters(self) -> None:
        self._requests = 0
        self._chunk_requests = 0
        self._bytes_sent = 0
        self._failures_injected = 0
        self._in_flight = 0
        self._max_in_flight = 0

    def reset_counters(self) -> None:
        """Zero all counters (``in_flight`` is kept) and clear the log."""
        with self._lock:
            in_flight = self._in_flight
            self._zero_counters()
            self._in_flight = self._max_in_flight = in_flight
            self._log.clear()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being served; return whether that happened.

        A client can receive a whole response just before the server logs it;
        call this before checking ``log``, ``count()`` or ``bytes_sent``.
        """
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    requests = _counter(
        '_requests',
        'Requests received (counted before responding, like chunk_requests and failures_injected).',
    )
    chunk_requests = _counter(
        '_chunk_requests', 'Requests for paths other than metadata documents and directories.'
    )
    bytes_sent = _counter('_bytes_sent', 'Response body bytes written (see wait_idle).')
    failures_injected = _counter('_failures_injected', 'Chunk requests answered with an injected failure.')
    in_flight = _counter('_in_flight', 'Requests currently being served (including their latency).')
    max_in_flight = _counter('_max_in_flight', 'The most requests served at once.')

    @property
    def log(self) -> list[dict[str, Any]]:
        """Copy of the last ``LOG_MAXLEN`` finished requests.

        Entries: ``path`` (relative, unquoted), ``method``, ``status`` (``None``
        if nothing was sent), ``range`` (requested header or ``None``),
        ``injected`` (failure mode or ``None``), ``start``/``end``
        (``time.perf_counter()``), ``bytes`` (body bytes sent).
        """
        with self._lock:
            return list(self._log)

    def count(self, prefix: str = '', *, method: str | None = None, status: int | None = None) -> int:
        """Number of logged requests whose path starts with ``prefix``
        (optionally also matching ``method`` and ``status``)."""
        prefix = prefix.lstrip('/')
        with self._lock:
            return sum(
                1
                for e in self._log
                if e['path'].startswith(prefix)
                and (method is None or e['method'] == method)
                and (status is None or e['status'] == status)
            )

    # -- lifecycle -----------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """Bound ``(host, port)``; only valid after :meth:`start`."""
        if self._httpd is None:
            raise RuntimeError('server not started')
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8123``."""
        host, port = self.address
        return f'http://{host}:{port}'

    def url_for(self, relpath: str | Path) -> str:
        """URL of ``relpath`` (relative to ``root``)."""
        rel = Path(relpath).as_posix().strip('/')
        return self.url if rel in ('', '.') else f'{self.url}/{quote(rel)}'

    @property
    def running(self) -> bool:
        return self._httpd is not None and not self._stopping.is_set()

    def start(self) -> ZarrHTTPServer:
        """Bind 127.0.0.1 and serve in background daemon threads."""
        if self._httpd is not None:
            raise RuntimeError('ZarrHTTPServer can only be started once')
        self._httpd = _HTTPServer(('127.0.0.1', self._port), self)
        serve = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={'poll_interval': 0.05},
            name=f'ZarrHTTPServer:{self.port}',
            daemon=True,
        )
        watchdog = threading.Thread(
            target=self._watchdog, name=f'ZarrHTTPServer-watchdog:{self.port}', daemon=True
        )
        self._threads = [serve, watchdog]
        serve.start()
        watchdog.start()
        return self

    def stop(self, timeout: float = _JOIN_TIMEOUT) -> None:
        """Stop serving, end stalled/slow responses and join threads (bounded).

        ``stop_reason`` tells why the server stopped: ``"stop"``, ``"max_seconds"``
        or ``"max_requests"``.
        """
        if self._httpd is None:
            return
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = 'stop'
        self._stop_called.set()
        self._wake_watchdog.set()
        self._stopped.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped; return whether it has."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> ZarrHTTPServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._httpd is not None else 'not started'
        return f'<ZarrHTTPServer {self.root} {where} {self._config}>'

    def _watchdog(self) -> None:
        """Wait for stop(), the request bound or ``max_seconds``, then shut down."""
        if not self._wake_watchdog.wait(self.max_seconds):
            with self._lock:
                self.stop_reason = self.stop_reason or 'max_seconds'
        if self.stop_reason == 'max_requests':
            # Let the requests admitted before the limit finish (bounded; stop() cuts it short).
            deadline = time.monotonic() + _JOIN_TIMEOUT
            while self._in_flight and time.monotonic() < deadline and not self._stop_called.wait(0.01):
                pass
        self._shutdown()

    def _shutdown(self) -> None:
        assert self._httpd is not None
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections = dict(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for thread in [self._threads[0], *connections.values()]:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._stopped.set()

    def _register_connection(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections[sock] = threading.current_thread()
        if self._stopping.is_set():
            sock.close()

    def _unregister_connection(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.pop(sock, None)

    # -- request handling ----------------------------------------------------

    def _begin(self, is_chunk: bool) -> tuple[int, _Config, float, str | None]:
        """Count a request; return its number, config, delay and failure to inject."""
        with self._lock:
            self._requests += 1
            self._total_requests += 1
            number = self._total_requests
            self._chunk_requests += is_chunk
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            cfg = self._config
            delay = cfg.latency + (self._rng.uniform(0.0, cfg.jitter) if cfg.jitter else 0.0)
            fail = None
            if is_chunk and cfg.failure_rate and self._rng.random() < cfg.failure_rate:
                fail = cfg.failure_mode
                self._failures_injected += 1
            if number >= self.max_requests and self.stop_reason is None:
                self.stop_reason = 'max_requests'
                self._wake_watchdog.set()
        return number, cfg, delay, fail

    def _finish(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._in_flight -= 1
            self._log.append(entry)
            if self._in_flight == 0:
                self._idle.notify_all()

    def _add_bytes(self, n: int) -> None:
        with self._lock:
            self._bytes_sent += n

    def _serve(self, h: _Handler, *, head: bool) -> None:
        relpath = unquote(urlsplit(h.path).path).lstrip('/')
        # Chunk requests: anything but metadata documents and directories (listing probes).
        is_chunk = not (is_metadata_path(relpath) or relpath.endswith('/') or (self.root / relpath).is_dir())
        number, cfg, delay, fail = self._begin(is_chunk)
        entry: dict[str, Any] = {
            'path': relpath,
            'method': h.command,
            'status': None,
            'range': h.headers.get('Range'),
            'injected': fail,
            'start': time.perf_counter(),
            'end': None,
            'bytes': 0,
        }
        try:
            respond(self, h, head, number, cfg, delay, fail, relpath, entry)
        except OSError:  # client went away or stop() shut the socket down
            h.close_connection = True
        finally:
            if self._stopping.is_set():
                h.close_connection = True
            entry['end'] = time.perf_counter()
            self._finish(entry)


@contextlib.contextmanager
def server_in_process(
    root: str | Path, latency: float = 0.0, failure_rate: float = 0.0, max_seconds: float = 3600
) -> Iterator[str]:
    """A :class:`ZarrHTTPServer` on ``root`` in a process of its own (its threads' memory and GIL
    are not the caller's); yields its URL. The child stops when its stdin closes (on exit), or
    after ``max_seconds`` whatever happens; one that does not end is killed."""
    code = (
        'import sys; from napari_async_slicing.testing import ZarrHTTPServer; '
        f's = ZarrHTTPServer({str(root)!r}, latency={latency}, failure_rate={failure_rate}, '
        f'max_seconds={max_seconds}).start(); '
        'print(s.url, flush=True); sys.stdin.read(); s.stop()'
    )
    proc = subprocess.Popen(
        [sys.executable, '-c', code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        url = proc.stdout.readline().strip()
        if not url.startswith('http://127.0.0.1:'):
            raise RuntimeError(f'the server did not start: {url!r}')
        yield url
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
