"""``napari-async-slicing serve``: serve a zarr directory or sample over HTTP."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._data import sample_data
from ._server import FAILURE_MODES, ZarrHTTPServer

__all__ = ['serve_main']

#: ``--sample`` choices mapped to ``sample_data(kind, size)`` arguments.
SAMPLES: dict[str, tuple[str, str]] = {
    'tiny': ('volume', 'tiny'),
    'small': ('volume', 'small'),
    's1': ('volume', 's1'),
    'ome': ('ome', 'small'),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='napari-async-slicing serve',
        description='Serve a zarr directory on http://127.0.0.1 with optional latency and failures.',
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('path', nargs='?', type=Path, metavar='PATH', help='directory to serve')
    src.add_argument('--sample', choices=sorted(SAMPLES), help='build (or reuse) and serve a sample dataset')
    p.add_argument('--latency', type=float, default=0.0, help='seconds added to every request')
    p.add_argument('--jitter', type=float, default=0.0, help='extra uniform random latency (seconds)')
    p.add_argument('--bandwidth', type=float, default=None, help='bytes/s per response')
    p.add_argument('--failure-rate', type=float, default=0.0, help='probability a chunk request fails')
    p.add_argument('--failure-mode', choices=FAILURE_MODES, default='500')
    p.add_argument('--stall-seconds', type=float, default=30.0)
    p.add_argument('--port', type=int, default=0, help='0 picks a free port')
    p.add_argument('--max-seconds', type=float, default=3600.0, help='stop after this many seconds')
    return p


def serve_main(argv: list[str] | None = None) -> int:
    """Run the server until Ctrl-C or ``--max-seconds``; return an exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.sample:
        print(f'Preparing sample {args.sample!r} ...', flush=True)
        root = sample_data(*SAMPLES[args.sample])
    else:
        root = args.path
        if not root.is_dir():
            parser.error(f'{root} is not a directory')
    try:
        server = ZarrHTTPServer(
            root,
            latency=args.latency,
            jitter=args.jitter,
            bandwidth=args.bandwidth,
            failure_rate=args.failure_rate,
            failure_mode=args.failure_mode,
            stall_seconds=args.stall_seconds,
            max_seconds=args.max_seconds,
            port=args.port,
            seed=None,
        )
    except ValueError as e:
        parser.error(str(e))
    with server:
        print(f'Serving {root} at {server.url}  (Ctrl-C to stop)', flush=True)
        try:
            while not server.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    print(f'Stopped ({server.stop_reason}); {server.requests} requests served.', flush=True)
    return 0
