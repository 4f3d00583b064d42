"""RedisStore against a real redis-server: the Store contract (with default and with tiny
chunks), plus what only Redis has to get right: chunking with bounded memory, atomic publish
under concurrent readers, TTL, maxmemory, an unreachable server, the engine, and the Airflow
connection."""

from __future__ import annotations

import hashlib
import os
import random
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import redis

from tests.harness.servers import start_redis
from xcomstash.config import StashConfig
from xcomstash.coordinate import XComCoordinate
from xcomstash.engine import Engine
from xcomstash.errors import (
    ObjectExistsError,
    ObjectMissingError,
    StoreError,
    StoreFullError,
    StoreReadError,
    StoreUnavailableError,
)
from xcomstash.format.reference import Reference, is_reference
from xcomstash.stores import StoreLocation, UnfinishedUpload, open_store, parse_store_url
from xcomstash.stores.redis import ConfiguredRedis, RedisStore, default_client
from xcomstash.testing import StoreContract, write

pytestmark = pytest.mark.redis


def raw_keys(client, prefix: str) -> list[str]:
    """Every key under the prefix (manifests, chunks, staging markers), by SCAN."""
    return sorted(k.decode() for k in client.scan_iter(match=f"{prefix}/*", count=1000))


@pytest.fixture
def raw_names(redis_client, redis_prefix: str):
    return lambda: raw_keys(redis_client, redis_prefix)


class TestRedisStoreContract(StoreContract):
    @pytest.fixture
    def store(self, redis_client, redis_prefix: str):
        store = RedisStore(redis_client, redis_prefix)
        yield store
        store.close()


class TestRedisStoreSmallChunksContract(StoreContract):
    """Every value above 256 bytes split over 8 KiB chunks: the contract's ranged reads and
    killed writers then cross many chunk keys."""

    @pytest.fixture
    def store(self, redis_client, redis_prefix: str):
        store = RedisStore(redis_client, redis_prefix, chunk_size=8192, inline_max=256)
        yield store
        store.close()


# ------------------------------------------------------------------ layout and URLs


def test_root_uri_names_the_prefix_and_no_host_or_password(redis_client, redis_prefix: str) -> None:
    store = open_store(f"redis://my_conn@/{redis_prefix}/deep/", clients=lambda location: redis_client)
    assert isinstance(store, RedisStore)
    assert store.root_uri == f"redis:///{redis_prefix}/deep"
    write(store, "d/r/t/0/v.xcs", b"x")
    assert store.uri_for("d/r/t/0/v.xcs") == f"redis:///{redis_prefix}/deep/d/r/t/0/v.xcs"
    # the root is itself a store URL (maintenance commands reopen a store from it)
    assert parse_store_url(store.root_uri) == StoreLocation(kind="redis", prefix=f"{redis_prefix}/deep", url=store.root_uri)
    assert redis_client.hget(f"{redis_prefix}/deep/d/r/t/0/v.xcs", "data") == b"x"


def test_chunk_namespace_cannot_be_written_as_an_object(store_factory) -> None:
    store = store_factory()
    with pytest.raises(StoreError, match="reserved"):
        write(store, "!chunks/0123/0", b"x")
    assert list(store.list()) == []


# ------------------------------------------------------------------ chunks and memory


@pytest.fixture
def store_factory(redis_client, redis_prefix: str):
    stores: list[RedisStore] = []

    def make(**options) -> RedisStore:
        stores.append(RedisStore(redis_client, redis_prefix, **options))
        return stores[-1]

    yield make
    for store in stores:
        store.close()


def pattern_block(index: int, size: int = 1 << 20) -> bytes:
    """Megabyte ``index`` of a value no two megabytes of which are alike (cheap to recompute)."""
    return hashlib.sha256(index.to_bytes(8, "big")).digest() * (size // 32)


def test_value_over_many_chunks_round_trips_with_memory_bounded_by_the_chunk_size(
    store_factory, redis_client, redis_prefix: str
) -> None:
    chunk = 256 * 1024
    store = store_factory(chunk_size=chunk)
    megabytes = 32
    tracemalloc.start()
    try:
        with store.writer("big/value.xcs") as f:
            for i in range(megabytes):
                f.write(pattern_block(i))
            peak_while_writing = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # buffer + chunks in flight (4 x 256 KiB) and one 1 MiB block of the test: far below 32 MiB
    assert peak_while_writing < 4 * 1024 * 1024, f"writer held {peak_while_writing} bytes"
    chunk_keys = [k for k in raw_keys(redis_client, redis_prefix) if "/!chunks/" in k]
    assert len(chunk_keys) == megabytes * (1 << 20) // chunk
    assert store.head("big/value.xcs").size == megabytes << 20
    reader = store.open_reader("big/value.xcs")
    for i in range(megabytes):
        assert reader.read_at(i << 20, 1 << 20) == pattern_block(i)
    reader.close()


def test_ranged_read_fetches_only_the_chunks_it_overlaps(store_factory, redis_client) -> None:
    store = store_factory(chunk_size=1000, inline_max=0)
    data = os.urandom(10_000)
    write(store, "r.xcs", data)
    reader = store.open_reader("r.xcs")

    def getranges() -> int:
        return redis_client.info("commandstats").get("cmdstat_getrange", {}).get("calls", 0)

    before = getranges()
    assert reader.read_at(3500, 1000) == data[3500:4500]  # chunks 3 and 4
    assert getranges() - before == 2
    before = getranges()
    assert reader.read_at(7000, 1000) == data[7000:8000]  # exactly chunk 7
    assert reader.read_at(9999, 100) == data[9999:]
    assert getranges() - before == 2
    target = bytearray(2500)
    assert reader.readinto_at(500, memoryview(target)) == 2500
    assert bytes(target) == data[500:3000]


def test_one_reader_serves_many_threads(store_factory) -> None:
    store = store_factory(chunk_size=4096, inline_max=0)
    data = os.urandom(300_000)
    write(store, "shared.xcs", data)
    reader = store.open_reader("shared.xcs")
    rng = random.Random(7)
    ranges = [(rng.randrange(len(data)), rng.randrange(1, 40_000)) for _ in range(400)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda r: reader.read_at(*r), ranges))
    assert results == [data[o : o + n] for o, n in ranges]


# ------------------------------------------------------------------ atomic publish


def test_reader_never_sees_half_a_value_while_another_writer_publishes(store_factory) -> None:
    store = store_factory(chunk_size=16 * 1024)
    versions = [bytes([65 + i]) * (200_000 + 30_000 * i) for i in range(3)]  # 13 to 17 chunks
    write(store, "hot.xcs", versions[0])
    stop = threading.Event()
    seen: list[bytes] = []
    errors: list[BaseException] = []

    def publish() -> None:
        for n in range(30):
            write(store, "hot.xcs", versions[n % 3])
        stop.set()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(store.get("hot.xcs"))
            except BaseException as exc:  # reported below
                errors.append(exc)

    threads = [threading.Thread(target=publish)] + [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(seen) > 10
    assert all(value in versions for value in seen), "a reader saw bytes of two versions"
    assert len({value for value in seen}) >= 2, "the readers never saw a publish"


def test_reader_holding_the_old_version_reads_it_whole_after_an_overwrite(
    store_factory, redis_client, redis_prefix: str
) -> None:
    store = store_factory(chunk_size=1024, replaced_grace=0.4)
    old, new = os.urandom(10_000), os.urandom(12_000)
    write(store, "k.xcs", old)
    reader = store.open_reader("k.xcs")
    assert reader.read_at(0, 100) == old[:100]
    write(store, "k.xcs", new)
    assert reader.read_at(0, reader.size) == old  # within the grace period: the old bytes
    assert store.get("k.xcs") == new
    time.sleep(0.6)  # the grace period is over: the old chunks are gone, the new ones stay
    assert len(raw_keys(redis_client, redis_prefix)) == 1 + 12
    with pytest.raises(StoreReadError, match="replaced while being read"):
        reader.read_at(0, reader.size)
    assert store.get("k.xcs") == new


def test_reader_of_a_replaced_version_without_grace_gets_a_typed_error_never_new_bytes(store_factory) -> None:
    store = store_factory(chunk_size=1024, replaced_grace=0)
    write(store, "k.xcs", b"o" * 5000)
    reader = store.open_reader("k.xcs")
    write(store, "k.xcs", b"n" * 5000)
    with pytest.raises(StoreReadError, match="replaced"):
        reader.read_at(0, 5000)
    target = bytearray(5000)
    with pytest.raises(StoreReadError):
        reader.readinto_at(0, memoryview(target))
    assert b"n" not in target


def test_reader_of_a_deleted_value_gets_object_missing(store_factory, redis_client, redis_prefix: str) -> None:
    store = store_factory(chunk_size=1024)
    write(store, "k.xcs", b"d" * 5000)
    reader = store.open_reader("k.xcs")
    store.delete("k.xcs")
    assert raw_keys(redis_client, redis_prefix) == []  # manifest and chunks at once
    with pytest.raises(ObjectMissingError, match="deleted while being read"):
        reader.read_at(0, 5000)


def test_publish_if_absent_of_a_chunked_value_leaves_no_chunks(store_factory, redis_client, redis_prefix) -> None:
    store = store_factory(chunk_size=1024)
    write(store, "cas.xcs", b"1" * 5000)
    with pytest.raises(ObjectExistsError):
        with store.new_object("cas.xcs") as pending:
            pending.write(b"2" * 5000)
            pending.publish("cas.xcs", if_absent=True)
    assert store.get("cas.xcs") == b"1" * 5000
    assert len(raw_keys(redis_client, redis_prefix)) == 1 + 5


def test_unfinished_upload_names_its_key_and_start(store_factory) -> None:
    store = store_factory(chunk_size=1024)
    before = time.time()
    block = store.new_object("killed/v.xcs")
    block.__enter__().write(b"k" * 5000)
    (upload,) = store.unfinished_uploads()
    assert upload.key == "killed/v.xcs"
    assert before - 1 <= upload.started <= time.time() + 1
    store.remove_unfinished(upload)
    with pytest.raises(StoreError):
        store.remove_unfinished(UnfinishedUpload(key="x", started=0, token="../../other"))


# ------------------------------------------------------------------ TTL


def test_ttl_expires_manifest_and_chunks_together(store_factory, redis_client, redis_prefix: str) -> None:
    store = store_factory(chunk_size=1024, ttl=0.5)
    write(store, "ttl/big.xcs", b"t" * 5000)
    write(store, "ttl/small.xcs", b"inline")
    names = raw_keys(redis_client, redis_prefix)
    assert len(names) == 1 + 5 + 1
    assert all(0 < redis_client.pttl(name) <= 500 for name in names)
    assert store.get("ttl/big.xcs") == b"t" * 5000
    time.sleep(0.7)
    assert store.head("ttl/big.xcs") is None
    with pytest.raises(ObjectMissingError):
        store.get("ttl/small.xcs")
    assert raw_keys(redis_client, redis_prefix) == []


def test_without_ttl_an_overwrite_clears_an_earlier_ttl(store_factory, redis_client, redis_prefix: str) -> None:
    write(store_factory(ttl=60), "k.xcs", b"expiring")
    write(store_factory(), "k.xcs", b"kept")
    assert redis_client.pttl(f"{redis_prefix}/k.xcs") == -1


# ------------------------------------------------------------------ maxmemory


@pytest.fixture(scope="module")
def small_redis(tmp_path_factory: pytest.TempPathFactory):
    server = start_redis(
        tmp_path_factory.mktemp("redis-small"), "--maxmemory", "2mb", "--maxmemory-policy", "noeviction"
    )
    client = default_client(server.url)
    try:
        yield client
    finally:
        client.close()
        server.stop()


def test_push_beyond_maxmemory_is_a_typed_error_and_leaves_no_key(small_redis, redis_prefix: str) -> None:
    store = RedisStore(small_redis, redis_prefix, chunk_size=64 * 1024)
    try:
        with pytest.raises(StoreFullError) as info:
            with store.writer("too/big.xcs") as f:
                for i in range(8):
                    f.write(pattern_block(i))
        assert isinstance(info.value, StoreUnavailableError)
        message = str(info.value)
        assert "out of memory" in message and "maxmemory 2.00M" in message and "noeviction" in message
        assert store.uri_for("too/big.xcs") in message
        assert raw_keys(small_redis, redis_prefix) == []
        assert list(store.unfinished_uploads()) == []
        write(store, "small.xcs", b"still fits")  # the failed push freed what it took
        assert store.get("small.xcs") == b"still fits"
    finally:
        store.close()


# ------------------------------------------------------------------ unreachable server


def test_stopped_server_is_unavailable_fast(tmp_path, redis_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_redis(tmp_path / "redis")
    monkeypatch.setenv("REDIS_URL", server.url)
    store = open_store(f"redis:///{redis_prefix}")  # no client factory: REDIS_URL
    try:
        write(store, "k.xcs", b"x")
        server.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="Redis unreachable"):
            store.get("k.xcs")
        with pytest.raises(StoreUnavailableError):
            write(store, "k2.xcs", b"y" * 100_000)
        with pytest.raises(StoreUnavailableError):
            list(store.list())
        assert time.monotonic() - started < 5
    finally:
        server.stop()
        store.close()


def test_hung_server_times_out(redis_server, redis_prefix: str) -> None:
    """A server that accepts but never answers (paused with SIGSTOP) gives an error, not a hang."""
    client = default_client(redis_server.url)
    client.connection_pool.connection_kwargs["socket_timeout"] = 0.2
    store = RedisStore(client, redis_prefix)
    write(store, "k.xcs", b"x")
    os.kill(redis_server.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            store.get("k.xcs")
        assert time.monotonic() - started < 5
    finally:
        os.kill(redis_server.pid, signal.SIGCONT)
        store.close()
        client.close()


# ------------------------------------------------------------------ engine


@pytest.fixture
def engine(redis_client, redis_prefix: str):
    engine = Engine(
        StashConfig(store_url=f"redis:///{redis_prefix}", threshold=0),
        clients=lambda location: ConfiguredRedis(redis_client, chunk_size=64 * 1024),
    )
    yield engine
    engine.close()


@pytest.fixture
def coordinate() -> XComCoordinate:
    return XComCoordinate("redis dag", f"manual__{uuid.uuid4().hex}", "make/frame", 2, "return_value")


def test_engine_round_trips_a_numpy_array_over_several_chunks(
    engine: Engine, coordinate: XComCoordinate, redis_client, redis_prefix: str
) -> None:
    arr = np.random.default_rng(0).random((500, 400))  # 1.6 MB, incompressible
    stored = engine.serialize(arr, coordinate)
    ref = Reference.from_json(stored)
    assert ref.uri.startswith(f"redis:///{redis_prefix}/redis%20dag/")
    manifest = redis_client.hgetall(ref.uri[len("redis:///") :])
    assert int(manifest[b"size"]) == ref.size and int(manifest[b"chunks"]) >= ref.size // (64 * 1024)
    back = engine.deserialize(stored, coordinate)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_engine_round_trips_a_dataframe_and_purges_it(
    engine: Engine, coordinate: XComCoordinate, redis_client, redis_prefix: str
) -> None:
    df = pd.DataFrame(
        {
            "id": np.arange(20_000, dtype="int64"),
            "x": np.random.default_rng(1).random(20_000),
            "name": [f"row {i}" for i in range(20_000)],
        }
    )
    stored = engine.serialize(df, coordinate)
    assert is_reference(stored)
    pd.testing.assert_frame_equal(engine.deserialize(stored, coordinate), df)
    assert engine.purge(stored, coordinate) is True
    assert raw_keys(redis_client, redis_prefix) == []


# ------------------------------------------------------------------ Airflow connection

RESULT_MARKER = "XCOMSTASH-TEST-RESULT "

CHILD = textwrap.dedent(
    """
    import json, os, sys
    from xcomstash.airflow.connections import client_for
    from xcomstash.errors import ConfigError, StoreError
    from xcomstash.stores import open_store, parse_store_url

    prefix = sys.argv[1]
    result = {}

    def refusal(url):
        try:
            client_for(parse_store_url(url))
        except ConfigError as exc:
            return str(exc)
        return None

    # 1. The store, from a URL naming the connection (password, db 3, plain TCP on loopback).
    store = open_store(f"redis://my_redis@/{prefix}", clients=client_for)
    options = store.client.connection_pool.connection_kwargs
    result["client"] = {k: options.get(k) for k in ("host", "port", "db", "socket_timeout")}
    result["store"] = [store.root_uri, store.chunk_size, store.ttl]
    with store.writer("conn/value.xcs") as f:
        f.write(b"v" * 300_000)
    result["got"] = store.get("conn/value.xcs") == b"v" * 300_000
    result["listed"] = [i.key for i in store.list()]

    # 2. No connection named: redis_default.
    result["default_db"] = open_store(f"redis:///{prefix}", clients=client_for).client.connection_pool.connection_kwargs["db"]

    # 3. A wrong password is refused by the server.
    try:
        open_store(f"redis://bad_redis@/{prefix}", clients=client_for).get("conn/value.xcs")
    except StoreError as exc:
        result["bad"] = [type(exc).__name__, str(exc)]

    # 4. TLS settings reach the client (built, not connected: nothing listens there).
    tls = client_for(parse_store_url("redis://tls_redis@/x")).client.connection_pool
    result["tls"] = [tls.connection_class.__name__] + [
        tls.connection_kwargs.get(k) for k in ("ssl_ca_certs", "ssl_cert_reqs", "ssl_check_hostname", "username")
    ]

    # 5. Plain TCP to another machine is refused even with allow_http_endpoints; to this one
    #    only with it (Airflow reads AIRFLOW__* variables on every lookup).
    result["remote"] = refusal("redis://remote_redis@/x")
    del os.environ["AIRFLOW__XCOMSTASH__ALLOW_HTTP_ENDPOINTS"]
    result["no_allow_http"] = refusal("redis://my_redis@/x")
    print("%s" + json.dumps(result))
    """
    % RESULT_MARKER
)


def test_airflow_connection_configures_the_client_and_store_options(
    tmp_path, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_redis(tmp_path / "redis", "--requirepass", "s3cret")
    try:
        conn = {"conn_type": "redis", "host": "127.0.0.1", "port": server.port, "password": "s3cret", "extra": {"db": 3}}
        monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow_home"))
        monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        monkeypatch.setenv("AIRFLOW_CONN_MY_REDIS", json.dumps(conn))
        monkeypatch.setenv("AIRFLOW_CONN_REDIS_DEFAULT", json.dumps({**conn, "extra": {"db": "5"}}))
        monkeypatch.setenv("AIRFLOW_CONN_BAD_REDIS", json.dumps({**conn, "password": "wrong"}))
        monkeypatch.setenv("AIRFLOW_CONN_REMOTE_REDIS", json.dumps({**conn, "host": "redis.example.com"}))
        tls_extra = {"ssl": "true", "ssl_ca_certs": "/etc/ssl/ca.pem", "ssl_cert_reqs": "required", "ssl_check_hostname": "true"}
        monkeypatch.setenv(
            "AIRFLOW_CONN_TLS_REDIS",
            json.dumps({**conn, "host": "redis.example.com", "login": "xcom", "extra": tls_extra}),
        )
        monkeypatch.setenv("AIRFLOW__XCOMSTASH__ALLOW_HTTP_ENDPOINTS", "True")
        monkeypatch.setenv("AIRFLOW__XCOMSTASH__REDIS_CHUNK_SIZE", "65536")
        monkeypatch.setenv("AIRFLOW__XCOMSTASH__REDIS_TTL", "600")
        monkeypatch.delenv("REDIS_URL", raising=False)
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, redis_prefix], capture_output=True, text=True, timeout=120
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARKER)]
        assert proc.returncode == 0 and lines, (
            f"child failed (exit {proc.returncode})\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
        )
        result = json.loads(lines[-1][len(RESULT_MARKER) :])

        assert result["client"] == {"host": "127.0.0.1", "port": server.port, "db": 3, "socket_timeout": 10.0}
        assert result["store"] == [f"redis:///{redis_prefix}", 65536, 600.0]
        assert result["got"] is True and result["listed"] == ["conn/value.xcs"]
        assert result["default_db"] == 5
        assert result["bad"][0] == "StoreUnavailableError" and "credentials" in result["bad"][1]
        assert result["tls"] == ["SSLConnection", "/etc/ssl/ca.pem", "required", True, "xcom"]
        assert "'remote_redis'" in result["remote"] and "TLS" in result["remote"]
        assert "'my_redis'" in result["no_allow_http"] and "allow_http_endpoints" in result["no_allow_http"]

        # What the child wrote is in database 3, split into 64 KiB chunks, with the TTL.
        check = redis.Redis(host="127.0.0.1", port=server.port, password="s3cret", db=3)
        names = [k.decode() for k in check.scan_iter(match=f"{redis_prefix}/*")]
        assert len(names) == 1 + 5
        assert all(0 < check.ttl(name) <= 600 for name in names)
        check.close()
    finally:
        server.stop()
