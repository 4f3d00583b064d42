"""GCSStore against a real fake-gcs-server: the Store contract, plus what only GCS has to get
right (resumable uploads in bounded memory, ranged reads of one generation, conditional
create, error types, the engine on top, the Airflow connection)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from tests.harness.gcs_server import emulator_client, start_fake_gcs
from tests.harness.proxy import TcpProxy
from xcomstash.config import StashConfig
from xcomstash.coordinate import XComCoordinate
from xcomstash.engine import Engine
from xcomstash.errors import (
    ConfigError,
    ObjectExistsError,
    ObjectMissingError,
    StoreError,
    StoreUnavailableError,
)
from xcomstash.format.reference import Reference, is_reference
from xcomstash.stores import open_store
from xcomstash.stores.gcs import ConfiguredGCS, GCSStore
from xcomstash.testing import Boom, StoreContract, write

pytestmark = pytest.mark.gcs

#: Small chunks in most tests: streaming starts after 1 MiB, so big-value paths stay fast.
SMALL_CHUNK = 1024 * 1024


@pytest.fixture
def store(gcs_client, gcs_server, gcs_prefix: str) -> GCSStore:
    return GCSStore(gcs_client, gcs_server.bucket, gcs_prefix)


@pytest.fixture
def raw_names(gcs_client, gcs_server, gcs_prefix: str):
    """Every object in the bucket under the store's prefix (upload sessions are not objects)."""

    def names() -> list[str]:
        return sorted(b.name for b in gcs_client.list_blobs(gcs_server.bucket, prefix=gcs_prefix + "/"))

    return names


class TestGCSStoreContract(StoreContract):
    pass


def make_store(client, prefix: str, **options) -> GCSStore:
    return GCSStore(client, "xcom", prefix, **options)


def pattern(index: int, size: int) -> bytes:
    """Deterministic, incompressible-looking piece ``index`` of a streamed value."""
    seed = hashlib.sha256(index.to_bytes(8, "big")).digest()
    return (seed * (size // len(seed) + 1))[:size]


# ------------------------------------------------------------------ layout and URLs


def test_objects_land_under_prefix(store: GCSStore, gcs_client, gcs_prefix: str) -> None:
    write(store, "d/r/t/0/v.xcs", b"x")
    assert store.root_uri == f"gs://xcom/{gcs_prefix}"
    assert store.uri_for("d/r/t/0/v.xcs") == f"gs://xcom/{gcs_prefix}/d/r/t/0/v.xcs"
    assert gcs_client.bucket("xcom").blob(f"{gcs_prefix}/d/r/t/0/v.xcs").download_as_bytes() == b"x"


def test_open_store_gs_url_passes_conn_id(gcs_client, gcs_prefix: str) -> None:
    seen = []

    def factory(location):
        seen.append((location.kind, location.conn_id))
        return gcs_client

    store = open_store(f"gs://my_conn@xcom/{gcs_prefix}/deep/", clients=factory)
    assert isinstance(store, GCSStore)
    assert store.root_uri == f"gs://xcom/{gcs_prefix}/deep"
    write(store, "k.xcs", b"via open_store")
    assert store.get("k.xcs") == b"via open_store"
    open_store(f"gcs://xcom/{gcs_prefix}", clients=factory)
    assert seen == [("gcs", "my_conn"), ("gcs", None)]


def test_gcs_store_states_conditional_create_and_no_cheap_publish(store: GCSStore) -> None:
    capabilities = store.capabilities
    assert capabilities.conditional_create and capabilities.multipart
    assert not capabilities.cheap_publish and not capabilities.local


def test_chunk_size_must_be_a_multiple_of_256_kib(gcs_client) -> None:
    with pytest.raises(ConfigError, match="256 KiB"):
        GCSStore(gcs_client, "xcom", "p", chunk_size=1000)


# ------------------------------------------------------------------ streamed writes


def test_value_larger_than_a_chunk_streams_in_bounded_memory(gcs_client, gcs_prefix: str, raw_names) -> None:
    chunk = 512 * 1024
    store = make_store(gcs_client, gcs_prefix, chunk_size=chunk)
    pieces, piece_size = 64, 256 * 1024  # 16 MiB in 256 KiB writes, never held whole
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        with store.writer("big/streamed.xcs") as pending:
            for i in range(pieces):
                piece = pattern(i, piece_size)
                digest.update(piece)
                pending.write(piece)
            assert not pending.cheap_publish  # a resumable upload is under way
            assert store.head("big/streamed.xcs") is None  # and nothing is visible yet
            assert raw_names() == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = pieces * piece_size
    # A chunk filling, one in flight, the client's copies of it: a few chunks (about 3 MiB
    # here, whatever the value's size), not the value.
    assert peak < 8 * chunk, f"peak {peak / 2**20:.1f} MiB while streaming {size / 2**20:.0f} MiB"
    reader = store.open_reader("big/streamed.xcs")
    try:
        assert reader.size == size
        back = hashlib.sha256()
        for offset in range(0, size, 5 << 20):
            back.update(reader.read_at(offset, 5 << 20))
        assert back.digest() == digest.digest()
    finally:
        reader.close()
    assert raw_names() == [f"{gcs_prefix}/big/streamed.xcs"]


def test_value_of_exactly_one_chunk_is_one_upload_publishable_anywhere(
    gcs_client, gcs_prefix: str, raw_names
) -> None:
    store = make_store(gcs_client, gcs_prefix, chunk_size=SMALL_CHUNK)
    data = pattern(1, SMALL_CHUNK)
    with store.new_object("staged/one.xcs") as pending:
        pending.write(data[:1000])
        pending.write(data[1000:])
        assert pending.cheap_publish
        pending.publish("blobs/by-digest.xcs", if_absent=True)
    assert store.get("blobs/by-digest.xcs") == data
    assert raw_names() == [f"{gcs_prefix}/blobs/by-digest.xcs"]  # nothing at the staged key


def test_streamed_upload_publishes_only_at_its_staged_key(gcs_client, gcs_prefix: str, raw_names) -> None:
    store = make_store(gcs_client, gcs_prefix, chunk_size=SMALL_CHUNK)
    with pytest.raises(StoreError, match="staged key") as info:
        with store.new_object("staged/big.xcs") as pending:
            pending.write(pattern(2, 3 * SMALL_CHUNK))
            assert not pending.cheap_publish
            pending.publish("blobs/elsewhere.xcs")
    assert not isinstance(info.value, ObjectExistsError)
    assert raw_names() == [], "the cancelled upload left an object behind"


def test_failed_streamed_write_keeps_the_old_object(gcs_client, gcs_prefix: str, raw_names) -> None:
    store = make_store(gcs_client, gcs_prefix, chunk_size=SMALL_CHUNK)
    write(store, "big/k.xcs", b"old")
    with pytest.raises(Boom):
        with store.writer("big/k.xcs") as f:
            for i in range(4):  # chunks are already sent when the task fails
                f.write(pattern(i, SMALL_CHUNK))
            raise Boom()
    assert store.get("big/k.xcs") == b"old"
    assert raw_names() == [f"{gcs_prefix}/big/k.xcs"]


def test_streamed_overwrite_replaces(gcs_client, gcs_prefix: str) -> None:
    store = make_store(gcs_client, gcs_prefix, chunk_size=SMALL_CHUNK)
    write(store, "big/k.xcs", b"old")
    data = pattern(3, 3 * SMALL_CHUNK + 17)
    write(store, "big/k.xcs", data)
    assert store.get("big/k.xcs") == data


def test_streamed_publish_if_absent(gcs_client, gcs_prefix: str, raw_names) -> None:
    store = make_store(gcs_client, gcs_prefix, chunk_size=SMALL_CHUNK)
    data = pattern(4, 2 * SMALL_CHUNK + 1)
    with store.new_object("cas/big.xcs") as pending:
        pending.write(data)
        pending.publish("cas/big.xcs", if_absent=True)
    assert store.get("cas/big.xcs") == data
    with pytest.raises(ObjectExistsError):
        with store.new_object("cas/big.xcs") as pending:
            pending.write(pattern(5, 2 * SMALL_CHUNK + 1))
            pending.publish("cas/big.xcs", if_absent=True)
    assert store.get("cas/big.xcs") == data
    assert raw_names() == [f"{gcs_prefix}/cas/big.xcs"]


def test_conditional_create_race_has_exactly_one_winner(store: GCSStore) -> None:
    for round_ in range(5):
        key = f"race/{round_}.xcs"
        barrier = threading.Barrier(2)

        def push(value: bytes) -> str:
            with store.new_object(key) as pending:
                pending.write(value)
                barrier.wait()
                try:
                    pending.publish(key, if_absent=True)
                except ObjectExistsError:
                    return "refused"
            return "won"

        values = [b"writer A " * 100, b"writer B " * 100]
        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(push, values))
        assert sorted(outcomes) == ["refused", "won"], outcomes
        assert store.get(key) == values[outcomes.index("won")]


# ------------------------------------------------------------------ reads


def test_ranged_reads_of_a_big_object(store: GCSStore) -> None:
    data = os.urandom(1 << 20) * 20  # 20 MiB: more than the first 8 MiB read, streamed in chunks
    write(store, "big/ranged.xcs", data)
    reader = store.open_reader("big/ranged.xcs")
    try:
        assert reader.size == len(data)
        for offset, length in [(0, 10), (5, 1 << 20), ((8 << 20) - 3, 10), (15 << 20, 3 << 20),
                               (len(data) - 5, 100), (len(data), 10)]:
            assert reader.read_at(offset, length) == data[offset : offset + length], (offset, length)
        target = bytearray(4 << 20)
        n = reader.readinto_at(18 << 20, memoryview(target))
        assert n == 2 << 20 and bytes(target[:n]) == data[18 << 20 :]

        spans = [(offset, 700_000) for offset in range(0, len(data), 650_000)]
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda span: reader.read_at(*span), spans))
        assert got == [data[o : o + n] for o, n in spans]
    finally:
        reader.close()


def test_reader_never_mixes_generations(store: GCSStore) -> None:
    old = b"\1" * (10 << 20)  # more than the first read: the rest comes later
    write(store, "gen/k.xcs", old)
    reader = store.open_reader("gen/k.xcs")
    try:
        write(store, "gen/k.xcs", b"\2" * len(old))  # overwritten while being read
        assert reader.read_at(0, 100) == old[:100]  # from the first read
        with pytest.raises(ObjectMissingError, match="replaced or deleted") as info:
            reader.read_at(9 << 20, 100)
        assert info.value.uri == store.uri_for("gen/k.xcs")
    finally:
        reader.close()
    fresh = store.open_reader("gen/k.xcs")
    try:
        assert fresh.read_at(9 << 20, 4) == b"\2" * 4
    finally:
        fresh.close()


# ------------------------------------------------------------------ failures


def test_missing_bucket_is_a_store_error_not_a_missing_object(gcs_client) -> None:
    store = GCSStore(gcs_client, "no-such-bucket-xcs", "p")
    for operation in (
        lambda: store.get("k.xcs"),
        lambda: store.open_reader("k.xcs"),
        lambda: store.head("k.xcs"),
        lambda: store.delete("k.xcs"),
        lambda: list(store.list()),
        lambda: write(store, "k.xcs", b"x"),
    ):
        with pytest.raises(StoreError, match="no-such-bucket-xcs") as info:
            operation()
        assert not isinstance(info.value, ObjectMissingError)


@pytest.fixture
def own_server(tmp_path):
    """A fake-gcs-server of this test's own, to stop or stall."""
    server = start_fake_gcs(tmp_path / "own-gcs")
    yield server
    server.stop()


UNAVAILABLE_CALLS = {
    "get": lambda s: s.get("k.xcs"),
    "open_reader": lambda s: s.open_reader("k.xcs"),
    "write": lambda s: write(s, "k2.xcs", b"x"),
    "streamed write": lambda s: write(s, "k3.xcs", b"x" * (3 * SMALL_CHUNK)),
    "head": lambda s: s.head("k.xcs"),
    "list": lambda s: list(s.list()),
    "delete": lambda s: s.delete("k.xcs"),
}


def test_stopped_server_is_unavailable_quickly(own_server) -> None:
    store = GCSStore(own_server.client(), "xcom", "p", timeout=2, retry_timeout=0.3, chunk_size=SMALL_CHUNK)
    write(store, "k.xcs", b"stored before the server stopped")
    write(store, "big.xcs", b"\0" * (9 << 20))
    reader = store.open_reader("big.xcs")  # fetched its first 8 MiB
    own_server.stop()
    for name, call in UNAVAILABLE_CALLS.items():
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as info:
            call(store)
        assert time.monotonic() - started < 5, name
        assert not isinstance(info.value, ObjectMissingError), name
    with pytest.raises(StoreUnavailableError):
        reader.read_at(8 << 20, 100)  # beyond what the first read fetched


def test_hung_server_times_out(own_server) -> None:
    proxy = TcpProxy(own_server.port).start()
    try:
        store = GCSStore(emulator_client(proxy.url), "xcom", "p", timeout=1, retry_timeout=1)
        write(store, "k.xcs", b"x")
        proxy.stall = True  # connections accepted, requests read, nothing ever answered
        proxy.drop_all()
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            store.get("k.xcs")
        assert time.monotonic() - started < 6
    finally:
        proxy.stop()


# ------------------------------------------------------------------ the engine on GCS


@pytest.fixture
def engine(gcs_client, gcs_prefix: str) -> Engine:
    seen = []

    def factory(location):
        seen.append(location.kind)
        return ConfiguredGCS(gcs_client, chunk_size=8 * 1024 * 1024)  # a 12 MiB value streams

    engine = Engine(StashConfig(store_url=f"gs://xcom/{gcs_prefix}", threshold=0), clients=factory)
    assert seen == ["gcs"]
    return engine


def stored_size(gcs_client, ref: Reference) -> int:
    assert ref.uri.startswith("gs://xcom/")
    blob = gcs_client.bucket("xcom").get_blob(ref.uri[len("gs://xcom/") :])
    assert blob is not None, f"{ref.uri} is not in the bucket"
    return blob.size


def test_engine_round_trip_numpy_array_streamed(engine: Engine, gcs_client, gcs_prefix: str) -> None:
    coordinate = XComCoordinate("gcs dag", "manual__1", "make/array", -1, "return_value")
    arr = np.random.default_rng(7).random((1500, 1000))  # 12 MiB: more than one 8 MiB chunk
    stored = engine.serialize(arr, coordinate)
    assert is_reference(stored)
    ref = Reference.from_json(stored)
    assert ref.uri.startswith(f"gs://xcom/{gcs_prefix}/gcs%20dag/manual__1/")
    assert stored_size(gcs_client, ref) == ref.size > 12_000_000
    # Streamed: published where it was uploaded, not under its digest (no rename on GCS).
    assert ref.uri != f"gs://xcom/{gcs_prefix}/{coordinate.blob_key(ref.digest)}"
    back = engine.deserialize(stored, coordinate)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    # The same value again: its upload is cancelled and the stored blob shared.
    again = Reference.from_json(engine.serialize(arr, coordinate))
    assert again.uri == ref.uri
    blobs = [b.name for b in gcs_client.list_blobs("xcom", prefix=f"{gcs_prefix}/") if "/.blobs/" in b.name]
    assert len(blobs) == 1, blobs


def test_engine_round_trip_dataframe(engine: Engine, gcs_client, gcs_prefix: str) -> None:
    engine_url = f"gs://xcom/{gcs_prefix}"
    coordinate = XComCoordinate("gcs dag", "manual__2", "make/frame", 3, "return_value")
    df = pd.DataFrame(
        {
            "id": np.arange(5000, dtype="int64"),
            "x": np.linspace(0, 1, 5000),
            "name": [f"row {i}" for i in range(5000)],
            "when": pd.date_range("2024-01-01", periods=5000, freq="min", tz="UTC"),
        }
    )
    stored = engine.serialize(df, coordinate)
    ref = Reference.from_json(stored)
    assert ref.uri == f"{engine_url}/{coordinate.blob_key(ref.digest)}"  # one upload: named by digest
    assert stored_size(gcs_client, ref) == ref.size
    pd.testing.assert_frame_equal(engine.deserialize(stored, coordinate), df)
    assert engine.purge(stored, coordinate) is True
    with pytest.raises(ObjectMissingError):
        engine.deserialize(stored, coordinate)


# ------------------------------------------------------------------ the Airflow connection

RESULT_MARKER = "XCOMSTASH-TEST-RESULT "

#: Airflow is imported in a child process: it reads its configuration once per process.
CHILD = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    from xcomstash.airflow.connections import client_for
    from xcomstash.config import StashConfig
    from xcomstash.coordinate import XComCoordinate
    from xcomstash.engine import Engine
    from xcomstash.errors import ConfigError
    from xcomstash.stores import open_store, parse_store_url

    prefix, key_file = sys.argv[1], sys.argv[2]
    emulator = os.environ["STORAGE_EMULATOR_HOST"]
    result = {}

    def refused(url):
        try:
            client_for(parse_store_url(url))
        except ConfigError as exc:
            return str(exc)
        return None

    def described(url):
        client = client_for(parse_store_url(url)).client
        credentials = client._credentials
        return [type(credentials).__name__, getattr(credentials, "service_account_email", None),
                client.project, list(getattr(credentials, "scopes", None) or [])]

    # 1. The emulator: the store and the engine through the connection named in the URL.
    store = open_store(f"gs://my_gcs@xcom/{prefix}", clients=client_for)
    result["root_uri"] = store.root_uri
    result["credentials"] = type(store.client._credentials).__name__
    result["options"] = [store.chunk_size, store.retry_timeout]
    with store.writer("conn/value.xcs") as f:
        f.write(b"written through the Airflow connection")
    result["got"] = store.get("conn/value.xcs").decode()
    engine = Engine(StashConfig(store_url=f"gs://my_gcs@xcom/{prefix}/engine", threshold=0), clients=client_for)
    coordinate = XComCoordinate("conn_dag", "run", "task", -1, "return_value")
    stored = engine.serialize(np.arange(12).reshape(3, 4), coordinate)
    result["uri"] = stored["uri"]
    result["array"] = engine.deserialize(stored, coordinate).tolist()

    # 2. Plain HTTP is refused without allow_http_endpoints, and to a remote host even with it.
    os.environ["AIRFLOW__XCOMSTASH__ALLOW_HTTP_ENDPOINTS"] = "False"
    result["http_refused"] = refused(f"gs://my_gcs@xcom/{prefix}")
    os.environ["AIRFLOW__XCOMSTASH__ALLOW_HTTP_ENDPOINTS"] = "True"
    os.environ["STORAGE_EMULATOR_HOST"] = "http://gcs.example.com:4443"
    result["remote_http_refused"] = refused(f"gs://my_gcs@xcom/{prefix}")

    # 3. Real credentials (no emulator; building a client sends no request).
    del os.environ["STORAGE_EMULATOR_HOST"]
    for conn_id in ("keyfile", "keypath", "old_names"):
        result[conn_id] = described(f"gs://{conn_id}@xcom/p")
    os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = key_file  # google_cloud_default is not defined
    result["default"] = described("gs://xcom/p")
    result["undefined"] = refused("gs://no_such_conn@xcom/p")
    result["bad_json"] = refused("gs://bad_json@xcom/p")
    result["unsupported"] = refused("gs://federated@xcom/p")
    print("%s" + json.dumps(result))
    """
    % RESULT_MARKER
)


def service_account_key(path) -> dict:
    """A service-account key file of a made-up account (a fresh RSA key: nothing real)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    info = {
        "type": "service_account",
        "project_id": "key-project",
        "private_key_id": "0123456789abcdef",
        "private_key": pem.decode(),
        "client_email": "xcomstash@key-project.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path.write_text(json.dumps(info))
    return info


def test_store_and_engine_use_airflow_google_connection_and_store_options(
    gcs_server, gcs_client, gcs_prefix: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "key.json"
    info = service_account_key(key_file)
    conns = {
        "MY_GCS": {"conn_type": "google_cloud_platform", "extra": {"project": "test"}},
        "KEYFILE": {"conn_type": "google_cloud_platform", "extra": {
            "keyfile_dict": json.dumps(info), "project": "conn-project",
            "scope": "https://www.googleapis.com/auth/devstorage.read_write"}},
        "KEYPATH": {"conn_type": "google_cloud_platform", "extra": {"key_path": str(key_file)}},
        "OLD_NAMES": {"conn_type": "google_cloud_platform", "extra": {
            "extra__google_cloud_platform__keyfile_dict": info,
            "extra__google_cloud_platform__project": "old-project"}},
        "BAD_JSON": {"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": "{not json"}},
        "FEDERATED": {"conn_type": "google_cloud_platform", "extra": {"credential_config_file": "/x.json"}},
    }
    for name, conn in conns.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{name}", json.dumps(conn))
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow_home"))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.endpoint)
    monkeypatch.setenv("AIRFLOW__XCOMSTASH__ALLOW_HTTP_ENDPOINTS", "True")
    monkeypatch.setenv("AIRFLOW__XCOMSTASH__GCS_CHUNK_SIZE", str(16 * 1024 * 1024))
    monkeypatch.setenv("AIRFLOW__XCOMSTASH__GCS_RETRY_TIMEOUT", "4.5")
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "API_ENDPOINT_OVERRIDE", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)

    proc = subprocess.run(
        [sys.executable, "-c", CHILD, gcs_prefix, str(key_file)], capture_output=True, text=True, timeout=120
    )
    lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_MARKER)]
    assert proc.returncode == 0 and lines, (
        f"child failed (exit {proc.returncode})\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    )
    result = json.loads(lines[-1][len(RESULT_MARKER) :])

    assert result["root_uri"] == f"gs://xcom/{gcs_prefix}"  # the conn id is not part of the URI
    assert result["credentials"] == "AnonymousCredentials"
    assert result["options"] == [16 * 1024 * 1024, 4.5]  # [xcomstash] gcs_chunk_size, gcs_retry_timeout
    assert result["got"] == "written through the Airflow connection"
    assert result["uri"].startswith(f"gs://xcom/{gcs_prefix}/engine/conn_dag/run/.blobs/")
    assert result["array"] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    # What the child wrote is really in the emulator, where the URL said.
    blob = gcs_client.bucket("xcom").blob(f"{gcs_prefix}/conn/value.xcs")
    assert blob.download_as_bytes() == b"written through the Airflow connection"

    assert "plain HTTP" in result["http_refused"] and "allow_http_endpoints" in result["http_refused"]
    assert "not this machine" in result["remote_http_refused"]

    email, cloud = info["client_email"], "https://www.googleapis.com/auth/cloud-platform"
    assert result["keyfile"] == ["Credentials", email, "conn-project",
                                 ["https://www.googleapis.com/auth/devstorage.read_write"]]
    assert result["keypath"] == ["Credentials", email, "key-project", [cloud]]
    assert result["old_names"] == ["Credentials", email, "old-project", [cloud]]
    assert result["default"] == ["Credentials", email, "key-project", [cloud]]  # application default
    assert "no_such_conn" in result["undefined"]
    assert "bad_json" in result["bad_json"] and "not valid JSON" in result["bad_json"]
    assert "credential_config_file" in result["unsupported"]  # never silently another identity
