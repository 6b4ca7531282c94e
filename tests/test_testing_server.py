"""Tests for napari_async_slicing.testing: HTTP server, sample data, remote opening."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import zarr

import napari_async_slicing.testing
from napari_async_slicing.testing import (
    ZarrHTTPServer,
    expected_plane,
    make_ome_zarr,
    make_volume,
    open_remote_array,
    open_remote_group,
    plane_value,
    sample_data,
    serve_main,
    which_plane,
)
from napari_async_slicing.testing._open import StoreKind

from .conftest import wait_until

# The fixtures module rather than ``.pytest_plugin``: once that module is also loaded
# through its pytest11 entry point, pluggy refuses to register it a second time.
pytest_plugins = ["napari_async_slicing.testing._fixtures"]

Factory = Callable[..., ZarrHTTPServer]
STORES: list[StoreKind] = ["fsspec", "obstore"]
# obstore retries 5xx/connection errors 10 times by default; tests want one attempt.
NO_RETRY = {"retry_config": {"max_retries": 0}}


def _get(server: ZarrHTTPServer, path: str, method: str = "GET",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, "/" + path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


@pytest.fixture
def blob_dir(tmp_path: Path) -> Path:
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 4)  # 1024 bytes
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "zarr.json").write_text('{"a": 1}')
    (tmp_path.parent / f"{tmp_path.name}-secret.txt").write_text("secret")
    return tmp_path


# -- data --------------------------------------------------------------------


def test_plane_values_are_distinguishable() -> None:
    shape = (20, 40, 36)
    planes = [expected_plane(shape, z) for z in range(shape[0])]
    for z, plane in enumerate(planes):
        assert plane.dtype == np.uint16 and plane.shape == (40, 36)
        assert len(np.unique(plane)) > 1
        assert which_plane(plane) == z
        np.testing.assert_array_equal(plane, plane_value(z, *np.mgrid[0:40, 0:36]))
    assert which_plane(planes[3][1:]) is None  # not a whole plane
    assert which_plane(planes[3] + 1) is None
    assert which_plane(np.zeros((4, 4))) == 0 and which_plane(np.ones((4, 4))) is None
    level2 = expected_plane(shape, 7, level=2)
    assert level2.shape == (10, 9)
    np.testing.assert_array_equal(level2, planes[7][::4, ::4])
    assert which_plane(level2, level=2) == 7 and which_plane(level2) is None


def test_make_volume_is_idempotent_and_checks_metadata(tmp_path: Path) -> None:
    path = make_volume(tmp_path / "v", shape=(3, 20, 30), chunks=(1, 16, 16))
    arr = zarr.open_array(path, mode="r")
    assert arr.metadata.zarr_format == 3 and arr.chunks == (1, 16, 16)
    np.testing.assert_array_equal(arr[2], expected_plane((3, 20, 30), 2))
    mtime = (path / "zarr.json").stat().st_mtime_ns
    assert make_volume(tmp_path / "v", shape=(3, 20, 30), chunks=(1, 16, 16)) == path
    assert (path / "zarr.json").stat().st_mtime_ns == mtime
    with pytest.raises(FileExistsError):
        make_volume(tmp_path / "v", shape=(3, 20, 30), chunks=(1, 8, 8))
    make_volume(tmp_path / "v", shape=(3, 20, 30), chunks=(1, 8, 8), overwrite=True)
    assert zarr.open_array(path, mode="r").chunks == (1, 8, 8)
    assert [p.name for p in tmp_path.iterdir()] == ["v"]  # no temp dirs left


def test_sample_data_uses_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAPARI_ASYNC_SLICING_CACHE", str(tmp_path))
    path = sample_data("volume", "tiny")
    assert path.parent == tmp_path
    assert zarr.open_array(path, mode="r").shape == (12, 64, 64)
    assert sample_data("volume", "tiny") == path
    with pytest.raises(ValueError):
        sample_data("volume", "huge")


def test_ome_zarr_metadata_and_levels(tiny_ome_zarr: Path, zarr_server_factory: Factory) -> None:
    server = zarr_server_factory(tiny_ome_zarr.parent)
    group: Any = open_remote_group(server.url_for(tiny_ome_zarr.name), zarr_format=3)
    ome: Any = group.attrs["ome"]
    assert ome["version"] == "0.5"
    (ms,) = ome["multiscales"]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert all(a["type"] == "space" for a in ms["axes"])
    assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2", "3"]
    for k, ds in enumerate(ms["datasets"]):
        assert ds["coordinateTransformations"][0]["scale"] == [1.0, 2.0**k, 2.0**k]
        level = group[ds["path"]]
        assert level.shape == (6, 128 // 2**k, 128 // 2**k)
        assert which_plane(level[4], level=k) == 4
    window = ome["omero"]["channels"][0]["window"]
    assert set(window) == {"start", "end", "min", "max"}
    assert group["labels"].attrs["ome"]["labels"] == ["cells"]
    cells = group["labels/cells"]
    assert "image-label" in cells.attrs["ome"]
    assert cells["0"].dtype == np.uint32 and cells["0"][:].max() > 0


def test_the_cells_sample_looks_like_nuclei_and_its_planes_tell_apart(tmp_path: Path) -> None:
    path = make_ome_zarr(tmp_path / "cells.ome.zarr", shape=(12, 256, 256), chunks=(1, 64, 64),
                         levels=3, labels=False, content="cells")
    group: Any = zarr.open_group(path, mode="r")
    assert "labels" not in group
    for k in range(3):
        level = group[str(k)]
        for z in (0, 5, 11):
            plane = level[z]
            np.testing.assert_array_equal(plane, expected_plane((12, 256, 256), z, level=k, content="cells"))
            assert which_plane(plane, level=k, content="cells") == z
            assert which_plane(plane, level=k) is None  # not the stripes
        np.testing.assert_array_equal(level[5], group["0"][5][:: 2**k, :: 2**k])  # levels subsample
    brightness = group["0"][5] // 256
    assert brightness.min() < 40 and brightness.max() > 150  # dim background, bright nuclei
    assert (brightness > 100).mean() > 0.02  # some of the plane is nuclei
    assert which_plane(group["0"][4], content="cells") != which_plane(group["0"][5], content="cells")
    with pytest.raises(ValueError):
        expected_plane((300, 8, 8), 256, content="cells")  # the low byte holds 256 planes


# -- serving -----------------------------------------------------------------


def test_get_head_404_and_confinement(blob_dir: Path, zarr_server_factory: Factory) -> None:
    server = zarr_server_factory(blob_dir)
    status, headers, body = _get(server, "blob.bin")
    assert (status, body) == (200, (blob_dir / "blob.bin").read_bytes())
    assert headers["Content-Length"] == "1024" and headers["Accept-Ranges"] == "bytes"
    status, headers, body = _get(server, "blob.bin", "HEAD")
    assert (status, headers["Content-Length"], body) == (200, "1024", b"")
    assert _get(server, "sub/zarr.json")[2] == b'{"a": 1}'
    for missing in ["nope", "sub/", "sub", "sub/c/0/0"]:
        assert _get(server, missing)[0] == 404
    for escape in [f"../{blob_dir.name}-secret.txt", f"%2e%2e/{blob_dir.name}-secret.txt"]:
        assert _get(server, escape)[0] == 404
    assert server.requests == 9
    assert server.chunk_requests == 6  # not zarr.json, "sub" or "sub/"
    assert server.wait_idle()
    assert server.count("sub/") == 3 and server.count("blob.bin", method="HEAD") == 1
    assert server.count(status=404) == 6


def test_keep_alive_connection_serves_several_requests(blob_dir: Path, zarr_server_factory: Factory) -> None:
    server = zarr_server_factory(blob_dir)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for path, status in [("blob.bin", 200), ("missing", 404), ("sub/zarr.json", 200)]:
            conn.request("GET", "/" + path)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == status
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [("bytes=10-19", 10, 19), ("bytes=1000-", 1000, 1023), ("bytes=-24", 1000, 1023), ("bytes=1020-5000", 1020, 1023)],
)
def test_range_requests(blob_dir: Path, zarr_server_factory: Factory, header: str, first: int, last: int) -> None:
    server = zarr_server_factory(blob_dir)
    status, headers, body = _get(server, "blob.bin", headers={"Range": header})
    assert status == 206
    assert headers["Content-Range"] == f"bytes {first}-{last}/1024"
    assert body == (blob_dir / "blob.bin").read_bytes()[first : last + 1]
    assert headers["Content-Length"] == str(last - first + 1)


def test_unsatisfiable_range(blob_dir: Path, zarr_server_factory: Factory) -> None:
    server = zarr_server_factory(blob_dir)
    status, headers, _ = _get(server, "blob.bin", headers={"Range": "bytes=2000-"})
    assert status == 416 and headers["Content-Range"] == "bytes */1024"


@pytest.mark.parametrize("store", STORES)
def test_remote_read_matches_expected_planes(tiny_volume: Path, tiny_volume_server: ZarrHTTPServer,
                                             store: StoreKind) -> None:
    kwargs = NO_RETRY if store == "obstore" else {}
    arr = open_remote_array(tiny_volume_server.url_for(tiny_volume.name), store=store, zarr_format=3, **kwargs)
    assert arr.shape == (12, 64, 64)
    for z in (0, 5, 11):
        plane = arr[z]
        np.testing.assert_array_equal(plane, expected_plane(arr.shape, z))
        assert which_plane(plane) == z
    # all 12 planes (48 chunks) concurrently from several threads
    with ThreadPoolExecutor(4) as pool:
        planes = list(pool.map(lambda z: arr[z], range(12)))
    assert [which_plane(p) for p in planes] == list(range(12))
    assert tiny_volume_server.wait_idle()
    assert tiny_volume_server.count("volume/c/5/") == 4 + 4
    assert tiny_volume_server.max_in_flight >= 2


def test_remote_tiny_volume_fixture(remote_tiny_volume: Any, tiny_volume_server: ZarrHTTPServer) -> None:
    tiny_volume_server.reset_counters()
    assert which_plane(remote_tiny_volume[7]) == 7
    assert tiny_volume_server.wait_idle()
    assert tiny_volume_server.chunk_requests == 4 == tiny_volume_server.count("volume/c/7/")
    assert tiny_volume_server.bytes_sent == sum(e["bytes"] for e in tiny_volume_server.log) > 0


def test_latency_applies_to_each_request(tiny_volume: Path, zarr_server_factory: Factory) -> None:
    server = zarr_server_factory(tiny_volume.parent, latency=0.2)
    t0 = time.perf_counter()
    arr = open_remote_array(server.url_for("volume"), zarr_format=3)  # one metadata request
    assert time.perf_counter() - t0 >= 0.2
    t0 = time.perf_counter()
    np.testing.assert_array_equal(arr[3, 32:, 32:], expected_plane(arr.shape, 3)[32:, 32:])  # one chunk
    elapsed = time.perf_counter() - t0
    assert 0.2 <= elapsed < 2.0
    server.latency = 0.0
    t0 = time.perf_counter()
    arr[3, :32, :32]
    assert time.perf_counter() - t0 < 0.2


def test_concurrent_requests_overlap(tiny_volume: Path, zarr_server_factory: Factory) -> None:
    n, latency = 8, 0.15
    server = zarr_server_factory(tiny_volume.parent, latency=latency)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda z: _get(server, f"volume/c/{z}/0/0")[0], range(n)))
    elapsed = time.perf_counter() - t0
    assert results == [200] * n
    assert server.wait_idle()
    assert latency <= elapsed < n * latency / 2, [(e["start"] - t0, e["end"] - t0) for e in server.log]
    assert server.max_in_flight >= n // 2
    entries = server.log
    assert max(e["start"] for e in entries) < min(e["end"] for e in entries)  # all overlapped


def test_zarr_reads_chunks_concurrently(tiny_volume: Path, zarr_server_factory: Factory) -> None:
    server = zarr_server_factory(tiny_volume.parent)
    arr = open_remote_array(server.url_for("volume"), zarr_format=3)
    server.latency = 0.2
    t0 = time.perf_counter()
    assert which_plane(arr[2]) == 2  # 4 chunks
    assert time.perf_counter() - t0 < 4 * 0.2
    assert server.max_in_flight >= 2


def test_bandwidth_limits_transfer(blob_dir: Path, zarr_server_factory: Factory) -> None:
    server = zarr_server_factory(blob_dir, bandwidth=4096)
    t0 = time.perf_counter()
    status, _, body = _get(server, "blob.bin")
    elapsed = time.perf_counter() - t0
    assert status == 200 and len(body) == 1024
    assert 0.2 <= elapsed < 2.0  # 1024 B at 4096 B/s = 0.25 s
    assert server.wait_idle()
    assert server.bytes_sent == 1024


def test_failure_500_raises_through_fsspec_and_skips_metadata(tiny_volume: Path, zarr_server_factory: Factory) -> None:
    server = zarr_server_factory(tiny_volume.parent, failure_rate=1.0, failure_mode="500")
    arr = open_remote_array(server.url_for("volume"))  # metadata (incl. v2 probes) never fails
    assert server.failures_injected == 0 and server.chunk_requests == 0
    with pytest.raises(aiohttp.ClientResponseError) as info:
        arr[0, :32, :32]
    assert info.value.status == 500
    assert server.failures_injected == server.chunk_requests == 1  # fsspec does not retry
    assert server.wait_idle()
    assert server.count("volume/c/0/0/0", status=500) == 1
    server.failure_rate = 0.0
    assert which_plane(arr[0]) == 0


def test_failure_500_through_obstore(tiny_volume: Path, zarr_server_factory: Factory) -> None:
    server = zarr_server_factory(tiny_volume.parent, failure_rate=1.0)
    arr = open_remote_array(server.url_for("volume"), store="obstore", zarr_format=3,
                            retry_config={"max_retries": 2, "backoff": {"init_backoff": timedelta(milliseconds=10)}})
    with pytest.raises(Exception, match="500"):
        arr[0, :32, :32]
    assert server.failures_injected == 3  # obstore retried 5xx twice


def test_failure_rate_is_probabilistic_and_seeded(tiny_volume: Path, zarr_server_factory: Factory) -> None:
    counts = []
    for _ in range(2):
        server = zarr_server_factory(tiny_volume.parent, failure_rate=0.5, seed=123)
        statuses = [_get(server, f"volume/c/{z}/0/0")[0] for z in range(12)]
        assert set(statuses) == {200, 500}
        counts.append(statuses)
    assert counts[0] == counts[1]


@pytest.mark.parametrize("store", STORES)
def test_corrupt_makes_decoding_fail(tiny_volume: Path, zarr_server_factory: Factory, store: StoreKind) -> None:
    server = zarr_server_factory(tiny_volume.parent, failure_rate=1.0, failure_mode="corrupt")
    kwargs = NO_RETRY if store == "obstore" else {}
    arr = open_remote_array(server.url_for("volume"), store=store, zarr_format=3, **kwargs)
    status, _, body = _get(server, "volume/c/0/0/0")
    real = (tiny_volume / "c" / "0" / "0" / "0").read_bytes()
    assert status == 200 and len(body) == len(real) and body != real
    with pytest.raises(Exception):  # noqa: B017 - codec-specific error type
        arr[0, :32, :32]
    assert server.failures_injected == 2


@pytest.mark.parametrize("store", STORES)
def test_stall_is_interrupted_by_stop(tiny_volume: Path, zarr_server_factory: Factory, store: StoreKind) -> None:
    server = zarr_server_factory(tiny_volume.parent, failure_mode="stall", stall_seconds=60)
    kwargs = NO_RETRY if store == "obstore" else {}
    arr = open_remote_array(server.url_for("volume"), store=store, zarr_format=3, **kwargs)
    server.failure_rate = 1.0
    outcome: dict[str, object] = {}

    def read() -> None:
        try:
            arr[0, :32, :32]
        except Exception as e:
            outcome["error"] = e

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert wait_until(lambda: server.in_flight == 1)
    time.sleep(0.1)
    assert reader.is_alive()  # stalled
    t0 = time.perf_counter()
    server.stop()
    assert time.perf_counter() - t0 < 2.0
    reader.join(10)
    assert not reader.is_alive()
    assert "error" in outcome
    assert server.failures_injected >= 1 and server.in_flight == 0
    assert server.log[-1]["status"] is None and server.log[-1]["injected"] == "stall"


def test_stall_closes_after_stall_seconds(blob_dir: Path, zarr_server_factory: Factory) -> None:
    server = zarr_server_factory(blob_dir, failure_rate=1.0, failure_mode="stall", stall_seconds=0.3)
    t0 = time.perf_counter()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        _get(server, "blob.bin")
    assert 0.3 <= time.perf_counter() - t0 < 3.0
    assert _get(server, "sub/zarr.json")[0] == 200  # metadata is never failed


def test_configure_validates(blob_dir: Path) -> None:
    server = ZarrHTTPServer(blob_dir)
    server.configure(latency=0.5, failure_mode="corrupt")
    assert (server.latency, server.failure_mode) == (0.5, "corrupt")
    with pytest.raises(ValueError):
        server.failure_mode = "explode"
    with pytest.raises(ValueError):
        server.configure(failure_rate=2)
    with pytest.raises(TypeError):
        server.configure(colour="red")
    assert server.failure_mode == "corrupt"


def test_counters_and_reset(blob_dir: Path, zarr_server_factory: Factory) -> None:
    server = zarr_server_factory(blob_dir)
    _get(server, "blob.bin")
    _get(server, "sub/zarr.json")
    _get(server, "blob.bin", headers={"Range": "bytes=0-9"})
    assert server.wait_idle()
    assert (server.requests, server.chunk_requests, server.bytes_sent) == (3, 2, 1024 + 8 + 10)
    assert [e["status"] for e in server.log] == [200, 200, 206]
    assert server.log[2]["range"] == "bytes=0-9"
    server.reset_counters()
    assert (server.requests, server.chunk_requests, server.bytes_sent, len(server.log)) == (0, 0, 0, 0)


def test_watchdog_max_seconds(blob_dir: Path) -> None:
    server = ZarrHTTPServer(blob_dir, max_seconds=0.3).start()
    port = server.port
    assert server.wait(5.0)
    assert server.stop_reason == "max_seconds" and not server.running
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_watchdog_max_requests(blob_dir: Path) -> None:
    with ZarrHTTPServer(blob_dir, max_requests=2) as server:
        assert _get(server, "blob.bin")[0] == 200
        assert _get(server, "blob.bin")[0] == 200
        assert server.wait(5.0)
        assert server.stop_reason == "max_requests"


def test_binds_loopback_only(blob_dir: Path) -> None:
    with pytest.raises(ValueError):
        ZarrHTTPServer(blob_dir, host="0.0.0.0")
    with ZarrHTTPServer(blob_dir) as server:
        assert server.address[0] == "127.0.0.1"
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.url_for("sub/zarr.json") == f"{server.url}/sub/zarr.json"
        # A non-loopback address of this host (if any) must not reach the server.
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.connect(("192.0.2.1", 9))  # no packets are sent for UDP connect
            own_ip = probe.getsockname()[0]
        except OSError:
            own_ip = None
        finally:
            probe.close()
        if own_ip and not own_ip.startswith("127."):
            with pytest.raises(OSError):
                socket.create_connection((own_ip, server.port), timeout=2).close()


def test_serve_main_runs_until_bound(tiny_volume: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_main([str(tiny_volume), "--max-seconds", "0.3", "--latency", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "http://127.0.0.1:" in out and "max_seconds" in out


def test_metadata_json_served_as_json(tiny_volume_server: ZarrHTTPServer) -> None:
    status, headers, body = _get(tiny_volume_server, "volume/zarr.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["shape"] == [12, 64, 64]


def test_pytest_plugin_provides_fixtures(tmp_path: Path) -> None:
    (tmp_path / "test_uses_plugin.py").write_text(
        "from napari_async_slicing.testing import which_plane\n"
        "def test_it(remote_tiny_volume, tiny_volume_server, tiny_ome_zarr):\n"
        "    assert which_plane(remote_tiny_volume[4]) == 4\n"
        "    assert tiny_volume_server.count('volume/c/4/') == 4\n"
        "    assert (tiny_ome_zarr / 'zarr.json').is_file()\n"
    )
    src = Path(napari_async_slicing.testing.__file__).parents[2]
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONPATH": str(src)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "napari_async_slicing.testing.pytest_plugin",
         "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
