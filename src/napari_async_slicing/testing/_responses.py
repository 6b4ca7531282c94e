"""What the test server answers: files under its root, byte ranges, and injected faults."""

from __future__ import annotations

import email.utils
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_async_slicing.testing._server import ZarrHTTPServer

METADATA_NAMES = frozenset({'zarr.json', '.zarray', '.zattrs', '.zgroup', '.zmetadata'})


def is_metadata_path(relpath: str) -> bool:
    """True if ``relpath`` names a zarr metadata document."""
    return relpath.rsplit('/', 1)[-1] in METADATA_NAMES


class _Unsatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Parse a single ``bytes=`` range into inclusive ``(first, last)``.

    Returns ``None`` to serve the whole file (no, malformed or multi-part
    range) and raises ``_Unsatisfiable`` if the range lies outside the file.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition('=')
    if unit.strip().lower() != 'bytes' or ',' in spec:
        return None
    first_s, sep, last_s = spec.strip().partition('-')
    if not sep:
        return None
    try:
        if first_s == '':
            suffix = int(last_s)
            if suffix < 0:
                return None
            if suffix == 0 or size == 0:
                raise _Unsatisfiable
            return max(0, size - suffix), size - 1
        first = int(first_s)
        last = int(last_s) if last_s else max(first, size - 1)
    except ValueError:
        return None
    if first < 0 or last < first:
        return None
    if first >= size:
        raise _Unsatisfiable
    return first, min(last, size - 1)


def resolve(server: ZarrHTTPServer, relpath: str) -> Path | None:
    """Map a URL path to a regular file under ``root``, or ``None``."""
    parts = [p for p in relpath.split('/') if p not in ('', '.')]
    if any(p == '..' or '\\' in p or '\x00' in p for p in parts):
        return None
    try:
        candidate = server.root.joinpath(*parts).resolve()
    except (OSError, RuntimeError):
        return None
    if not candidate.is_relative_to(server.root) or not candidate.is_file():
        return None
    return candidate


def respond(
    server: ZarrHTTPServer,
    h: Any,
    head: bool,
    number: int,
    cfg: Any,
    delay: float,
    fail: str | None,
    relpath: str,
    entry: dict[str, Any],
) -> None:
    if number > server.max_requests:
        send_simple(server, h, 503, entry, head)
        return
    if delay > 0 and server._stopping.wait(delay):
        h.close_connection = True
        return
    if fail == 'stall':
        server._stopping.wait(cfg.stall_seconds)
        h.close_connection = True
        return
    if fail == '500':
        send_simple(server, h, 500, entry, head)
        return
    path = resolve(server, relpath)
    if path is None:
        send_simple(server, h, 404, entry, head)
        return
    stat = path.stat()
    size = stat.st_size
    try:
        byte_range = parse_range(entry['range'], size)
    except _Unsatisfiable:
        send_simple(server, h, 416, entry, head, {'Content-Range': f'bytes */{size}'})
        return
    first, last = byte_range if byte_range is not None else (0, size - 1)
    length = last - first + 1
    h.send_response(206 if byte_range is not None else 200)
    entry['status'] = 206 if byte_range is not None else 200
    json_like = is_metadata_path(relpath)
    h.send_header('Content-Type', 'application/json' if json_like else 'application/octet-stream')
    h.send_header('Content-Length', str(length))
    h.send_header('Accept-Ranges', 'bytes')
    h.send_header('Last-Modified', email.utils.formatdate(stat.st_mtime, usegmt=True))
    h.send_header('ETag', f'"{stat.st_mtime_ns:x}-{size:x}"')
    if byte_range is not None:
        h.send_header('Content-Range', f'bytes {first}-{last}/{size}')
    h.end_headers()
    if head or length == 0:
        return
    if fail == 'corrupt':
        with server._lock:
            body = server._rng.randbytes(length)
    else:
        with path.open('rb') as f:
            f.seek(first)
            body = f.read(length)
    write_body(server, h, body, cfg.bandwidth, entry)


def write_body(
    server: ZarrHTTPServer, h: Any, body: bytes, bandwidth: float | None, entry: dict[str, Any]
) -> None:
    if bandwidth is None:
        h.wfile.write(body)
        entry['bytes'] = len(body)
        server._add_bytes(len(body))
        return
    piece = max(256, int(bandwidth / 50))  # ~20 ms per piece
    t0 = time.perf_counter()
    sent = 0
    view = memoryview(body)
    while sent < len(body):
        chunk = view[sent : sent + piece]
        # Each piece leaves once the time its bytes take at `bandwidth` has passed.
        wait = t0 + (sent + len(chunk)) / bandwidth - time.perf_counter()
        if wait > 0 and server._stopping.wait(wait):
            h.close_connection = True
            return
        h.wfile.write(chunk)
        sent += len(chunk)
        entry['bytes'] = sent
        server._add_bytes(len(chunk))


def send_simple(
    server: ZarrHTTPServer,
    h: Any,
    status: int,
    entry: dict[str, Any],
    head: bool,
    headers: dict[str, str] | None = None,
) -> None:
    body = f'{status} {h.responses.get(status, ("",))[0]}\n'.encode()
    h.send_response(status)
    entry['status'] = status
    h.send_header('Content-Type', 'text/plain')
    h.send_header('Content-Length', str(len(body)))
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    h.end_headers()
    if not head:
        h.wfile.write(body)
        entry['bytes'] = len(body)
        server._add_bytes(len(body))
