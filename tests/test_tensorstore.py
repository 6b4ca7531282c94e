"""tensorstore as a read engine (issue 25): spec mapping and its fallbacks, and reads through the
read queue over the real HTTP server that behave as zarr-python's do (equal data, per-chunk
retries, missing chunks, cancellation of unsent chunk reads, stalls, a viewer scrub)."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
import zarr.storage

ts = pytest.importorskip('tensorstore')

from napari_async_slicing._cache import ChunkCache  # noqa: E402
from napari_async_slicing._reading import (  # noqa: E402
    CancelToken,
    Env,
    ReadContext,
    ReadQueue,
    ReadTogether,
    SliceCancelled,
    _retry,
    is_transient,
    read,
    reading,
    source_for,
)
from napari_async_slicing._reading import _tensorstore as te  # noqa: E402
from napari_async_slicing._reading._loop import io_loop  # noqa: E402
from napari_async_slicing._reading._plan import owner  # noqa: E402
from napari_async_slicing._reading._sources import ArraySource, DaskSource, ZarrSource  # noqa: E402
from napari_async_slicing._reading._tensorstore_spec import spec_for  # noqa: E402
from napari_async_slicing.testing import ZarrHTTPServer, open_remote_array  # noqa: E402

from .conftest import SHAPE, count_loop_calls, wait_until  # noqa: E402


@pytest.fixture
def engine():
    eng = te.TensorstoreEngine(read_timeout=5.0)
    yield eng
    eng.close()


def queue_of(engine, *, cache_bytes: int = 1 << 24, read_timeout: float = 5.0, **kwargs) -> ReadQueue:
    cache = ChunkCache(cache_bytes) if cache_bytes else None
    return ReadQueue(cache, read_timeout=read_timeout, env=Env(None, None, engine), **kwargs)


def read_through(queue: ReadQueue, array, selection, token: CancelToken | None = None) -> np.ndarray:
    """``array[selection]`` as a request reads it: planned here, chunks fetched by ``queue``."""
    with reading(ReadContext(queue=queue, token=token or CancelToken())):
        return read(array, selection)


def opened(engine, array) -> bool:
    """Whether tensorstore (not the zarr-python fallback) read ``array``."""
    return engine._stores.get(id(array)) is not None and not isinstance(
        engine._stores.get(id(array)), asyncio.Task
    )


@pytest.fixture
def data_root(tmp_path, volume_path) -> Path:
    """A directory of our own to serve (tests may remove things from it)."""
    root = tmp_path / 'served'
    root.mkdir()
    shutil.copytree(volume_path, root / 'volume.zarr')
    return root


@pytest.fixture
def own_server(data_root):
    with ZarrHTTPServer(data_root, max_seconds=300) as srv:
        yield srv


# --- spec mapping ------------------------------------------------------------------------------


def test_local_store_v3_maps_to_file(volume_path):
    z = zarr.open_array(volume_path, mode='r')
    assert spec_for(z) == {'driver': 'zarr3', 'kvstore': {'driver': 'file', 'path': f'{volume_path}/'}}


def test_local_store_v2_maps_to_zarr_driver_and_reads(tmp_path, engine):
    z = zarr.create_array(
        tmp_path / 'v2.zarr', shape=(3, 40, 40), chunks=(1, 16, 16), dtype='i4', zarr_format=2
    )
    z[:] = np.arange(3 * 40 * 40).reshape(3, 40, 40)
    assert spec_for(z) == {'driver': 'zarr', 'kvstore': {'driver': 'file', 'path': f'{tmp_path}/v2.zarr/'}}
    queue = queue_of(engine)
    np.testing.assert_array_equal(read_through(queue, z, (1, slice(None), slice(5, 33))), z[1, :, 5:33])
    assert opened(engine, z)


def test_array_path_in_group_is_appended(tmp_path):
    group = zarr.open_group(tmp_path / 'g.zarr', mode='w')
    group.create_array('a/b', shape=(4,), chunks=(2,), dtype='u1')
    z = zarr.open_group(tmp_path / 'g.zarr', mode='r')['a/b']
    assert spec_for(z)['kvstore'] == {'driver': 'file', 'path': f'{tmp_path}/g.zarr/a/b/'}


def test_fsspec_http_maps_to_http_with_headers(server):
    url = server.url_for('volume.zarr')
    z = open_remote_array(url, storage_options={'headers': {'X-Token': 'abc'}})
    assert spec_for(z) == {
        'driver': 'zarr3',
        'kvstore': {'driver': 'http', 'base_url': url, 'path': '', 'headers': ['X-Token: abc']},
    }
    z = open_remote_array(url, storage_options={'client_kwargs': {'headers': {'X-A': '1'}}})
    assert spec_for(z)['kvstore']['headers'] == ['X-A: 1']


def test_fsspec_http_basic_auth_becomes_a_header(server):
    import aiohttp

    z = open_remote_array(
        server.url_for('volume.zarr'), storage_options={'auth': aiohttp.BasicAuth('u', 'pw')}
    )
    assert spec_for(z)['kvstore']['headers'] == ['Authorization: Basic ' + base64.b64encode(b'u:pw').decode()]


def test_obstore_http_maps_to_http_with_headers(server):
    url = server.url_for('volume.zarr')
    z = open_remote_array(url, store='obstore', client_options={'default_headers': {'X-Token': 'abc'}})
    assert spec_for(z) == {
        'driver': 'zarr3',
        'kvstore': {'driver': 'http', 'base_url': url, 'path': '', 'headers': ['x-token: abc']},
    }


def _object_store_array(inner, path: str = 'arr'):
    """A zarr array over ``ObjectStore(inner)`` without touching the store (S3 and GCS are not
    reachable from here; the mapping looks at the store, the path and the format only)."""
    from zarr.core.array import Array, AsyncArray

    store = zarr.storage.ObjectStore(inner, read_only=True)
    meta = zarr.create_array({}, shape=(4,), chunks=(2,), dtype='u1').metadata
    return Array(AsyncArray(metadata=meta, store_path=zarr.storage.StorePath(store, path)))


def test_obstore_s3_maps_to_s3():
    from obstore.store import S3Store

    inner = S3Store(
        'bucket', prefix='data/set', region='eu-west-1', endpoint='http://127.0.0.1:9000', skip_signature=True
    )
    assert spec_for(_object_store_array(inner)) == {
        'driver': 'zarr3',
        'kvstore': {
            'driver': 's3',
            'bucket': 'bucket',
            'path': 'data/set/arr/',
            'aws_region': 'eu-west-1',
            'endpoint': 'http://127.0.0.1:9000',
            'aws_credentials': {'type': 'anonymous'},
        },
    }


def test_obstore_gcs_maps_to_gcs():
    from obstore.store import GCSStore

    inner = GCSStore('bucket', prefix='p', skip_signature=True)
    assert spec_for(_object_store_array(inner, 'img/0')) == {
        'driver': 'zarr3',
        'kvstore': {'driver': 'gcs', 'bucket': 'bucket', 'path': 'p/img/0/'},
    }


def test_obstore_local_maps_to_file_and_reads(volume_path, engine):
    from obstore.store import LocalStore

    store = zarr.storage.ObjectStore(LocalStore(volume_path.parent), read_only=True)
    z = zarr.open_array(store, path='volume.zarr', mode='r')
    assert spec_for(z)['kvstore'] == {'driver': 'file', 'path': f'{volume_path}/'}
    np.testing.assert_array_equal(read_through(queue_of(engine), z, (3,)), z[3])


def test_dask_from_zarr_reads_its_zarr_array_with_tensorstore(remote_volume, engine):
    import dask.array as da

    lazy = da.from_zarr(remote_volume)
    source = source_for(lazy, Env(tensorstore=engine))
    assert isinstance(source, te.TensorstoreSource) and source.array is remote_volume
    assert spec_for(lazy) == spec_for(remote_volume)
    np.testing.assert_array_equal(read_through(queue_of(engine), lazy, (4,)), remote_volume[4])
    assert opened(engine, remote_volume)


# --- fallbacks: zarr-python (or dask) reads, silently and correctly ----------------------------


def falls_back(array, engine) -> bool:
    return spec_for(array) is None and not isinstance(
        source_for(array, Env(tensorstore=engine)), te.TensorstoreSource
    )


def test_fallback_memory_store(engine):
    z = zarr.create_array({}, shape=(4, 4), chunks=(2, 2), dtype='u1')
    z[:] = 7
    assert falls_back(z, engine)
    assert type(source_for(z, Env(tensorstore=engine))) is ZarrSource
    np.testing.assert_array_equal(read_through(queue_of(engine), z, (1,)), z[1])


def test_fallback_wrapper_store(volume_path, engine):
    wrapped = zarr.storage.LoggingStore(zarr.storage.LocalStore(volume_path, read_only=True))
    z = zarr.open_array(wrapped, mode='r')
    assert falls_back(z, engine)
    np.testing.assert_array_equal(read_through(queue_of(engine), z, (2,)), z[2])


def test_fallback_not_zarr(engine):
    import dask.array as da

    assert isinstance(source_for(np.zeros((2, 2)), Env(tensorstore=engine)), ArraySource)
    assert isinstance(source_for(da.zeros((4, 4), chunks=2), Env(tensorstore=engine)), DaskSource)
    assert spec_for(np.zeros((2, 2))) is None


def test_fallback_dask_graph_on_top_of_zarr(remote_volume, engine):
    import dask.array as da

    lazy = da.from_zarr(remote_volume) + 1
    assert falls_back(lazy, engine)
    assert isinstance(source_for(lazy, Env(tensorstore=engine)), DaskSource)


def test_fallback_dask_on_a_cluster_stays_dask(remote_volume, engine):
    import dask.array as da

    lazy = da.from_zarr(remote_volume)
    assert isinstance(source_for(lazy, Env(dask_client=object(), tensorstore=engine)), DaskSource)


def test_fallback_fsspec_option_tensorstore_cannot_take(server, engine):
    z = open_remote_array(server.url_for('volume.zarr'), storage_options={'cookies': {'session': 'x'}})
    assert falls_back(z, engine)
    np.testing.assert_array_equal(read_through(queue_of(engine), z, (6,)), z[6])


def test_fallback_obstore_http_client_option_tensorstore_cannot_take(server, engine):
    z = open_remote_array(
        server.url_for('volume.zarr'), store='obstore', client_options={'allow_invalid_certificates': True}
    )
    assert falls_back(z, engine)


def test_fallback_s3_with_explicit_keys():
    from obstore.store import S3Store

    inner = S3Store('bucket', access_key_id='AK', secret_access_key='SK', region='us-east-1')
    assert spec_for(_object_store_array(inner)) is None


def test_fallback_gcs_with_client_option():
    from obstore.store import GCSStore

    inner = GCSStore('bucket', skip_signature=True, client_options={'proxy_url': 'http://127.0.0.1:9'})
    assert spec_for(_object_store_array(inner)) is None


def test_fallback_open_fails(tmp_path, engine):
    """A dtype tensorstore does not read (zarr v3 strings): the spec maps, the open fails, the
    read is zarr-python's, and the array is zarr-python's from then on."""
    z = zarr.create_array(tmp_path / 's.zarr', shape=(4,), chunks=(2,), dtype=str)
    z[:] = np.array(['a', 'bb', 'c', 'd'])
    assert isinstance(source_for(z, Env(tensorstore=engine)), te.TensorstoreSource)
    assert list(read_through(queue_of(engine), z, (slice(0, 4),))) == ['a', 'bb', 'c', 'd']
    assert type(source_for(z, Env(tensorstore=engine))) is ZarrSource


def test_fallback_404_metadata(own_server, data_root, engine):
    """The metadata is gone from the server since zarr opened the array: tensorstore cannot open
    it (one request, not retried), zarr-python reads the chunks as it would have."""
    z = open_remote_array(own_server.url_for('volume.zarr'))
    expected = z[5]
    (data_root / 'volume.zarr' / 'zarr.json').unlink()
    own_server.wait_idle()
    own_server.reset_counters()
    np.testing.assert_array_equal(read_through(queue_of(engine), z, (5,)), expected)
    own_server.wait_idle()
    assert own_server.count('volume.zarr/zarr.json', status=404) == 1
    assert type(source_for(z, Env(tensorstore=engine))) is ZarrSource


def test_fallback_closed_engine(remote_volume):
    eng = te.TensorstoreEngine(read_timeout=5.0)
    eng.close()
    assert type(source_for(remote_volume, Env(tensorstore=eng))) is ZarrSource


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs fork')
def test_fallback_forked_child(remote_volume, engine):
    assert isinstance(source_for(remote_volume, Env(tensorstore=engine)), te.TensorstoreSource)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once, touching nothing else
        try:
            ok = type(source_for(remote_volume, Env(tensorstore=engine))) is ZarrSource
            os.write(write_end, b'1' if ok else b'0')
        finally:
            os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
        time.sleep(0.02)
    answer = os.read(read_end, 1)
    os.close(read_end)
    assert answer == b'1'
    assert isinstance(source_for(remote_volume, Env(tensorstore=engine)), te.TensorstoreSource)


def test_fallback_tensorstore_missing(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, 'tensorstore', None)  # ``import tensorstore`` fails
    assert not te.available() and not te.uses_tensorstore('tensorstore')
    assert te.engine_for('tensorstore', 5.0) is None
    assert 'not installed' in caplog.text
    assert te.engine_for('auto', 5.0) is None


def test_modules_import_without_tensorstore(volume_path):
    code = (
        "import sys; sys.modules['tensorstore'] = None\n"
        'import zarr\n'
        'from napari_async_slicing._reading import _tensorstore as te, Env, source_for\n'
        'from napari_async_slicing.components._layer_slicer import AsyncLayerSlicer\n'
        'from napari_async_slicing._options import SlicingOptions\n'
        f'z = zarr.open_array({str(volume_path)!r}, mode="r")\n'
        "assert not te.available() and te.spec_for(z)['driver'] == 'zarr3'\n"
        "for choice in ('tensorstore', 'auto'):\n"
        '    s = AsyncLayerSlicer(SlicingOptions(read_engine=choice))\n'
        "    assert s.read_engine == 'zarr' and type(source_for(z, s.queue.env)).__name__ == 'ZarrSource'\n"
        '    s.shutdown()\n'
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == 'ok', done.stderr


# --- reads through the queue over the real HTTP server -----------------------------------------


@pytest.mark.parametrize('kind', ['fsspec', 'obstore'])
def test_reads_equal_zarr(server, kind, engine):
    z = open_remote_array(server.url_for('volume.zarr'), store=kind)
    queue = queue_of(engine, cache_bytes=0)
    for selection in [
        (5,),
        (slice(2, 4), slice(10, 50), slice(None)),
        (0, 3, slice(None)),
        (11, slice(40, 64), 7),
    ]:
        np.testing.assert_array_equal(read_through(queue, z, selection), z[selection])
    assert opened(engine, z)


def test_sharded_array_reads_inner_chunks(tmp_path, engine):
    z = zarr.create_array(
        tmp_path / 'sh.zarr', shape=(4, 64, 64), chunks=(1, 16, 16), shards=(2, 32, 32), dtype='u2'
    )
    z[:] = np.arange(4 * 64 * 64, dtype='u2').reshape(4, 64, 64)
    with ZarrHTTPServer(tmp_path, max_seconds=60) as srv:
        remote = open_remote_array(srv.url_for('sh.zarr'))
        source = source_for(remote, Env(tensorstore=engine))
        assert source.plan((3, slice(None), slice(8, 60)), 1 << 20).chunks[0] == (3, 0, 0)
        np.testing.assert_array_equal(
            read_through(queue_of(engine), remote, (3, slice(None), slice(8, 60))), z[3, :, 8:60]
        )
        assert opened(engine, remote)


def test_our_cache_keeps_chunks_tensorstore_keeps_none(server, engine):
    """tensorstore's cache pool is 0 bytes: the slicer's ChunkCache is the one budget."""
    assert engine.context_spec['cache_pool'] == {'total_bytes_limit': 0}
    assert engine.context_spec['http_request_concurrency']['limit'] >= 64
    z = open_remote_array(server.url_for('volume.zarr'))
    expected = z[4]
    for cache_bytes, second_requests in [(1 << 24, 0), (0, 4)]:
        queue = queue_of(engine, cache_bytes=cache_bytes)
        read_through(queue, z, (4,))
        server.wait_idle()
        server.reset_counters()
        np.testing.assert_array_equal(read_through(queue, z, (4,)), expected)
        server.wait_idle()
        assert server.chunk_requests == second_requests, cache_bytes


def test_5xx_burst_is_retried_per_chunk(server, engine):
    z = open_remote_array(server.url_for('volume.zarr'))
    queue = queue_of(engine, cache_bytes=0)
    read_through(queue, z, (0,))  # opened
    server.reset_counters()
    server.configure(failure_rate=1.0, failure_mode='500')
    result: list = []
    reader = threading.Thread(target=lambda: result.append(read_through(queue, z, (6,))))
    reader.start()
    assert wait_until(lambda: server.failures_injected >= 4)
    server.configure(failure_rate=0.0)
    reader.join(20)
    np.testing.assert_array_equal(result[0], z[6])
    assert server.count(status=500) >= 4 and server.count(status=200) >= 4


def test_5xx_that_persists_fails_transient_within_the_window(server, engine):
    z = open_remote_array(server.url_for('volume.zarr'))
    queue = queue_of(engine, read_timeout=1.0)
    read_through(queue, z, (0,))
    server.reset_counters()
    server.configure(failure_rate=1.0, failure_mode='500')
    start = time.monotonic()
    with pytest.raises(te.TensorstoreReadError) as info:
        read_through(queue, z, (2, slice(0, 32), slice(0, 32)))  # one chunk
    elapsed = time.monotonic() - start
    server.configure(failure_rate=0.0)
    assert info.value.status == 500 and is_transient(info.value)
    assert elapsed < 3.0
    # tensorstore makes one attempt a retry: at most RETRY_ATTEMPTS, none after the window
    assert 2 <= server.count(status=500) <= _retry.RETRY_ATTEMPTS


def test_missing_chunk_is_the_fill_value_read_once(tmp_path, engine):
    z = zarr.create_array(
        tmp_path / 'sparse.zarr', shape=(2, 64, 64), chunks=(1, 32, 32), dtype='u2', fill_value=9
    )
    z[0, :32, :32] = 1
    with ZarrHTTPServer(tmp_path, max_seconds=60) as srv:
        remote = open_remote_array(srv.url_for('sparse.zarr'))
        expected = remote[0]
        assert (expected == 9).sum() == 3 * 32 * 32
        queue = queue_of(engine)
        read_through(queue, remote, (1, 0, 0))  # opened
        srv.wait_idle()
        srv.reset_counters()
        np.testing.assert_array_equal(read_through(queue, remote, (0,)), expected)
        srv.wait_idle()
        assert srv.count(status=404) == 3 and srv.count(status=200) == 1
        assert opened(engine, remote)


def test_cancel_stops_chunk_reads_not_sent_yet(server, engine):
    """A superseded request: its chunks in flight are cancelled (their requests run to the end)
    and the queued ones are never requested (tensorstore queues nothing of its own)."""
    z = open_remote_array(server.url_for('volume.zarr'))
    queue = queue_of(engine, cache_bytes=0, max_in_flight=2)
    read_through(queue, z, (0, 0, 0))  # opened
    server.wait_idle()
    server.configure(latency=0.4)
    server.reset_counters()
    token = CancelToken()
    outcome: list = []

    def request() -> None:
        try:
            read_through(queue, z, (slice(0, 4),), token)  # 16 chunks
        except SliceCancelled:
            outcome.append('cancelled')

    reader = threading.Thread(target=request)
    reader.start()
    time.sleep(0.15)
    token.cancel()
    reader.join(5)
    assert outcome == ['cancelled']
    time.sleep(1.2)  # three request latencies: every queued chunk would have gone out by now
    server.wait_idle()
    assert server.chunk_requests == 2
    chunks = [e for e in server.log if e['path'].startswith('volume.zarr/c/')]
    assert [e['status'] for e in chunks] == [200, 200]  # on the wire: ran to the end


def _on_io_loop(coro, timeout: float = 10.0):
    return asyncio.run_coroutine_threadsafe(coro, io_loop()).result(timeout)


def test_chunk_reads_started_together_wake_the_loop_less_than_once_a_chunk(server, engine, monkeypatch):
    """Chunk reads of no one request (prefetch, previews) started in one turn of zarr's loop are
    settled together: a finishing read calls into the loop only if it is the one waited on.
    Each read awaited on its own calls in once a chunk (and each call takes the GIL on
    tensorstore's thread)."""
    z = open_remote_array(server.url_for('volume.zarr'))
    store = _on_io_loop(engine.store_for(engine.source(z)))
    server.wait_idle()
    server.configure(latency=0.2)  # every request waits as long: they finish together
    regions = [
        (slice(i, i + 1), slice(y, y + 32), slice(x, x + 32))
        for i in range(1, 5)
        for y in (0, 32)
        for x in (0, 32)
    ]

    async def turn():
        return await asyncio.gather(*[engine.read(store, region) for region in regions])

    calls = count_loop_calls(monkeypatch, io_loop())
    chunks = _on_io_loop(turn())
    # tensorstore's threads are not started by Python: dummy threads to it
    from_tensorstore = [call for call, thread in calls if isinstance(thread, threading._DummyThread)]
    for region, chunk in zip(regions, chunks, strict=True):
        np.testing.assert_array_equal(chunk, z[region])
    assert 1 <= len(from_tensorstore) <= 8, len(from_tensorstore)


def test_a_read_cancelled_in_its_turn_leaves_the_others_to_finish(server, engine):
    z = open_remote_array(server.url_for('volume.zarr'))
    store = _on_io_loop(engine.store_for(engine.source(z)))
    expected = z[3:4, 32:64, 0:32]
    server.wait_idle()
    server.configure(latency=0.3)
    server.reset_counters()
    regions = [(slice(3, 4), slice(y, y + 32), slice(0, 32)) for y in (0, 32)]

    async def turn():
        futures = [engine.read(store, region) for region in regions]  # one turn
        await asyncio.sleep(0.1)
        futures[0].cancel()
        return await futures[1], futures[0]

    data, cancelled = _on_io_loop(turn())
    np.testing.assert_array_equal(data, expected)
    assert cancelled.cancelled()
    server.wait_idle()
    assert server.chunk_requests == 2  # both were on the wire


def test_a_stalled_read_does_not_hold_back_its_turn(server, own_server, engine):
    """The settling task waits on one read at a time, but never longer than ``SWEEP_S`` before it
    looks at the others again: a read that finished is handed over while the one waited on
    stalls (here two servers, so that the first read of the turn stalls and the second not)."""

    def opened_store(srv):
        z = open_remote_array(srv.url_for('volume.zarr'))
        return z, _on_io_loop(engine.store_for(engine.source(z)))

    _, stalling = opened_store(own_server)
    z, answering = opened_store(server)
    own_server.configure(failure_rate=1.0, failure_mode='stall', stall_seconds=5)
    region = (slice(5, 6), slice(32, 64), slice(0, 32))

    async def turn():
        first = engine.read(stalling, region)  # waited on first: it stalls
        second = engine.read(answering, region)
        start = time.monotonic()
        try:
            return await second, time.monotonic() - start
        finally:
            first.cancel()

    data, elapsed = _on_io_loop(turn())
    np.testing.assert_array_equal(data, z[5:6, 32:64, 0:32])
    assert elapsed < 1.0  # the stall lasts 5 s


def test_one_future_cancel_leaves_queued_requests_to_tensorstore(server):
    """Why the queue keeps the queuing (documents tensorstore 0.1.86): one future over many
    chunks, cancelled, still has every request tensorstore queued sent."""
    context = ts.Context({**te.context_spec(), 'http_request_concurrency': {'limit': 2}})
    store = ts.open(spec_for(open_remote_array(server.url_for('volume.zarr'))), context=context).result()
    server.configure(latency=0.2)
    server.reset_counters()
    future = store[0:4].read()  # 16 chunks
    time.sleep(0.1)
    future.cancel()
    assert wait_until(lambda: server.chunk_requests == 16, timeout=4.0), server.chunk_requests


def test_stalled_server_ends_within_read_timeout(server, engine):
    z = open_remote_array(server.url_for('volume.zarr'))
    queue = queue_of(engine, read_timeout=1.0)
    read_through(queue, z, (0,))
    server.configure(failure_rate=1.0, failure_mode='stall', stall_seconds=10)
    start = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        read_through(queue, z, (8,))
    elapsed = time.monotonic() - start
    server.configure(failure_rate=0.0)
    assert is_transient(info.value)
    assert 0.9 < elapsed < 2.5


def test_a_reread_of_a_stalled_chunk_waits_for_curl_to_drop_its_request(server, engine, monkeypatch):
    """tensorstore joins a new read of a chunk to its request still on the wire: once the server
    answers again, other chunks read at once and the stalled ones once curl's low-speed time
    (half the first engine's read timeout, once per process) has ended their requests.

    The queue's memory of recent failures is off here: the re-read must reach tensorstore."""
    from napari_async_slicing._reading import _queue

    monkeypatch.setattr(_queue, 'FAILED_MEMORY_S', 0.0)
    low_speed = float(os.environ['TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS'])
    z = open_remote_array(server.url_for('volume.zarr'))
    queue = queue_of(engine, cache_bytes=0, read_timeout=1.0)
    read_through(queue, z, (0,))
    server.configure(failure_rate=1.0, failure_mode='stall', stall_seconds=30)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        read_through(queue, z, (8,))
    server.configure(failure_rate=0.0)
    np.testing.assert_array_equal(read_through(queue, z, (9,)), z[9])  # fresh requests
    assert time.monotonic() - start < 2.5
    queue.read_timeout = low_speed + 5
    np.testing.assert_array_equal(read_through(queue, z, (8,)), z[8])
    assert low_speed - 0.5 < time.monotonic() - start < low_speed + 4


def test_error_translation_classifies_as_is_transient_expects():
    cases = {
        'ABORTED: Error reading http://x/c/0: All 1 retry attempts failed: [HTTP code 503]': (True, 503),
        'ABORTED: Error reading http://x/c/0: All 1 retry attempts failed: [HTTP code 429]': (True, 429),
        "UNAVAILABLE: CURL error Couldn't connect to server [curl_code='7']": (True, None),
        "ABORTED: ... CURL error Timeout was reached [curl_code='28']": (True, None),
        'DEADLINE_EXCEEDED: too slow': (True, None),
        'NOT_FOUND: Error opening "zarr3" driver: Metadata at http://x/zarr.json does not exist': (
            False,
            None,
        ),
        'PERMISSION_DENIED: Error reading http://x/c/0: [HTTP code 403]': (False, 403),
        'FAILED_PRECONDITION: Error decoding chunk': (False, None),
    }
    for message, (transient, status) in cases.items():
        error = te.translate_error(ValueError(message))
        assert isinstance(error, te.TensorstoreReadError) and error.status == status, message
        assert is_transient(error) is transient, message
    assert isinstance(te.translate_error(ValueError("ABORTED: [curl_code='28']")), TimeoutError)
    plain = ValueError('not a status')
    assert te.translate_error(plain) is plain


# --- the slicer -------------------------------------------------------------------------------


def test_the_slicer_makes_one_engine_and_closes_it():
    from napari_async_slicing._options import SlicingOptions
    from napari_async_slicing.components._layer_slicer import AsyncLayerSlicer

    slicer = AsyncLayerSlicer(SlicingOptions(read_engine='tensorstore', read_timeout=3.0))
    engine = slicer.queue.env.tensorstore
    assert slicer.read_engine == 'tensorstore' and isinstance(engine, te.TensorstoreEngine)
    assert engine.read_timeout == 3.0
    slicer.shutdown()
    assert engine.closed
    for choice, expected in [
        ('zarr', 'zarr'),
        ('auto', 'tensorstore' if te.AUTO_USES_TENSORSTORE else 'zarr'),
    ]:
        slicer = AsyncLayerSlicer(SlicingOptions(read_engine=choice))
        assert slicer.read_engine == expected and (slicer.queue.env.tensorstore is None) == (
            expected == 'zarr'
        )
        slicer.shutdown()


def test_viewer_scrub_with_tensorstore_shows_the_right_planes(viewer_with, server, remote_volume, qtbot):
    from .test_slicer import add_remote, record_shown, shown_plane, step_to

    viewer = viewer_with(read_engine='tensorstore')
    assert viewer._layer_slicer.read_engine == 'tensorstore'
    server.configure(latency=0.03, jitter=0.05)
    layer = add_remote(viewer, remote_volume)
    shown = record_shown(viewer, layer)
    for z in range(1, SHAPE[0]):
        step_to(viewer, z)
        qtbot.wait(15)  # a user dragging the slider
    qtbot.waitUntil(lambda: layer.loaded, timeout=5000)
    viewer._layer_slicer.wait_until_idle(timeout=5)
    assert shown[-1] == SHAPE[0] - 1
    assert shown == sorted(set(shown)), f'planes shown out of order: {shown}'
    assert shown_plane(viewer, layer) == SHAPE[0] - 1
    step_to(viewer, 2)
    qtbot.waitUntil(lambda: shown_plane(viewer, layer) == 2 and layer.loaded, timeout=5000)
    assert opened(viewer._layer_slicer.queue.env.tensorstore, remote_volume)


# --- a request's chunks read as one -------------------------------------------------------------


def test_a_requests_chunks_are_one_read_its_plane_that_reads_array(server, engine, monkeypatch):
    """The chunks of one request that start together are one tensorstore read (one call into
    Python from tensorstore's threads, not one a chunk); the plane is that read's array, not a
    copy, and the cache keeps its chunks as views of it, counted once."""
    z = open_remote_array(server.url_for('volume.zarr'))
    queue = queue_of(engine)
    read_through(queue, z, (0,))  # opened
    server.wait_idle()
    server.configure(latency=0.1)
    calls = count_loop_calls(monkeypatch, io_loop())
    plane = read_through(queue, z, (slice(1, 5),))  # 16 chunks
    from_tensorstore = [call for call, thread in calls if isinstance(thread, threading._DummyThread)]
    np.testing.assert_array_equal(plane, z[1:5])
    assert len(from_tensorstore) == 1, from_tensorstore
    key = queue.cache.source_key(z)
    chunks = [queue.cache.peek((key, (i, y, x))) for i in range(1, 5) for y in (0, 1) for x in (0, 1)]
    read_as_one = owner(plane)
    assert read_as_one is not None and all(owner(chunk) is read_as_one for chunk in chunks)
    assert queue.cache.bytes == plane.nbytes + queue.cache.peek((key, (0, 0, 0))).nbytes * 4


def _group_of(engine, store, regions, together):
    """On zarr's loop: the reads of ``regions`` started in one turn for one request."""
    return [engine.read(store, region, together) for region in regions]


def test_a_failed_read_as_one_fails_each_chunk_and_splits_the_request(own_server, engine):
    """Each chunk of a failed read gets its error (the queue retries each); the request's later
    reads go one by one, so that a retry reads only its chunk."""
    z = open_remote_array(own_server.url_for('volume.zarr'))
    store = _on_io_loop(engine.store_for(engine.source(z)))
    regions = [(slice(2, 3), slice(y, y + 32), slice(0, 32)) for y in (0, 32)]
    together = ReadTogether()
    own_server.configure(failure_rate=1.0, failure_mode='500')

    async def failing():
        futures = _group_of(engine, store, regions, together)
        return await asyncio.gather(*futures, return_exceptions=True)

    errors = _on_io_loop(failing())
    assert [getattr(e, 'status', None) for e in errors] == [500, 500] and together.split
    assert all(is_transient(e) for e in errors)
    own_server.configure(failure_rate=0.0)
    # The read gave up at its first 500: its other request may still be on the wire, and a read
    # of that chunk now could be answered by it. Requests that began before the switch end first.
    assert own_server.wait_idle()

    async def again():
        return await asyncio.gather(*_group_of(engine, store, regions, together))

    first, second = _on_io_loop(again())
    np.testing.assert_array_equal(first, z[2:3, 0:32, 0:32])
    np.testing.assert_array_equal(second, z[2:3, 32:64, 0:32])
    assert owner(first) is not owner(second) or owner(first) is None  # two reads


def test_a_read_as_one_goes_on_while_any_of_its_chunks_is_wanted(server, engine):
    z = open_remote_array(server.url_for('volume.zarr'))
    store = _on_io_loop(engine.store_for(engine.source(z)))
    regions = [(slice(3, 4), slice(y, y + 32), slice(0, 32)) for y in (0, 32)]
    server.configure(latency=0.3)

    async def one_given_up():
        futures = _group_of(engine, store, regions, ReadTogether())
        await asyncio.sleep(0.1)
        futures[0].cancel()
        return await futures[1], futures[0]

    data, cancelled = _on_io_loop(one_given_up())
    np.testing.assert_array_equal(data, z[3:4, 32:64, 0:32])
    assert cancelled.cancelled()


def test_chunks_of_a_read_larger_than_the_cache_are_kept_as_copies(server, engine):
    """A read as one larger than the whole budget cannot be kept whole: its chunks are kept
    each as a copy, as a chunk read alone would be (else none of them would be kept)."""
    z = open_remote_array(server.url_for('volume.zarr'))
    chunk_bytes = 32 * 32 * 2
    queue = queue_of(engine, cache_bytes=3 * chunk_bytes)  # a plane is 4 chunks
    expected = z[4]
    read_through(queue, z, (4,))
    server.wait_idle()
    assert len(queue.cache) == 3 and queue.cache.bytes == 3 * chunk_bytes
    server.reset_counters()
    np.testing.assert_array_equal(read_through(queue, z, (4,)), expected)
    server.wait_idle()
    assert server.chunk_requests == 1
