"""AzureBlobStore against a real Azurite: the Store contract, plus what only Azure has to get
right (staged blocks, ETag-pinned ranged reads, conditional create, an unreachable service,
the adlfs URL form)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import tracemalloc

import pytest
from azure.core.exceptions import ResourceNotFoundError

from xcomstash.errors import (
    ConfigError,
    ObjectExistsError,
    ObjectMissingError,
    StoreError,
    StoreReadError,
    StoreUnavailableError,
)
from xcomstash.stores import open_store
from xcomstash.stores.azure import FIRST_READ_BYTES, AzureBlobStore
from xcomstash.stores.base import UnfinishedUpload
from xcomstash.testing import Boom, StoreContract, write

pytestmark = pytest.mark.azure

MiB = 1024 * 1024


@pytest.fixture
def container(azure_client, azurite):
    return azure_client.get_container_client(azurite.container)


@pytest.fixture
def store(container, azure_prefix: str):
    store = AzureBlobStore(container, azure_prefix)
    yield store
    store.close()


@pytest.fixture
def small_block_store(container, azure_prefix: str):
    """Blocks of 1 MiB, so a few MiB exercise the multi-block path."""
    store = AzureBlobStore(container, azure_prefix, block_size=MiB)
    yield store
    store.close()


@pytest.fixture
def raw_names(container, azure_prefix: str):
    """Every blob under the store's prefix, committed or with uncommitted blocks only."""

    def names() -> list[str]:
        listed = container.list_blobs(name_starts_with=azure_prefix + "/", include=["uncommittedblobs"])
        return sorted(b.name for b in listed)

    return names


class TestAzureStoreContract(StoreContract):
    pass


# ------------------------------------------------------------------ layout and URLs


def test_objects_land_under_prefix_and_uris_name_the_container(store, container, azure_prefix: str) -> None:
    write(store, "d/r/t/0/v.xcs", b"x")
    assert store.root_uri == f"abfs://xcom/{azure_prefix}"
    assert store.uri_for("d/r/t/0/v.xcs") == f"abfs://xcom/{azure_prefix}/d/r/t/0/v.xcs"
    assert container.get_blob_client(f"{azure_prefix}/d/r/t/0/v.xcs").download_blob().readall() == b"x"


def test_open_store_accepts_every_scheme_and_passes_the_conn_id(azure_client, azure_prefix: str) -> None:
    seen = []

    def factory(location):
        seen.append(location.conn_id)
        return azure_client

    for scheme in ("abfs", "abfss", "wasb", "wasbs", "az"):
        store = open_store(f"{scheme}://my_conn@xcom/{azure_prefix}/deep/", clients=factory)
        assert isinstance(store, AzureBlobStore)
        assert store.root_uri == f"abfs://xcom/{azure_prefix}/deep"
    write(store, "k.xcs", b"via open_store")
    assert store.get("k.xcs") == b"via open_store"
    assert seen == ["my_conn"] * 5


def test_adlfs_url_keeps_its_account_and_refuses_another(azure_client, azure_prefix: str) -> None:
    url = f"abfs://xcom@devstoreaccount1.dfs.core.windows.net/{azure_prefix}"
    store = open_store(url, clients=lambda location: azure_client)
    assert store.root_uri == url
    write(store, "k.xcs", b"adlfs form")
    assert store.get(store.key_for(store.uri_for("k.xcs"))) == b"adlfs form"
    with pytest.raises(ConfigError, match="otheraccount"):
        open_store(
            f"abfs://xcom@otheraccount.dfs.core.windows.net/{azure_prefix}", clients=lambda loc: azure_client
        )


def test_without_client_or_connection_string_says_how_to_configure(monkeypatch, azure_prefix: str) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(ConfigError, match="AZURE_STORAGE_CONNECTION_STRING"):
        open_store(f"abfs://xcom/{azure_prefix}")


def test_default_client_comes_from_the_connection_string_env(monkeypatch, azurite, azure_prefix: str) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    store = open_store(f"wasb://xcom/{azure_prefix}")
    write(store, "env.xcs", b"from env")
    assert store.get("env.xcs") == b"from env"


# ------------------------------------------------------------------ streamed, staged writes


def test_value_of_many_blocks_streams_with_bounded_memory(small_block_store, container, azure_prefix: str) -> None:
    store = small_block_store
    chunk = os.urandom(256 * 1024)
    total = 32 * MiB  # 32 blocks of 1 MiB; at most a few are held at once
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        with store.writer("big/value.xcs") as f:
            for i in range(total // len(chunk)):
                piece = chunk[i % 7 :] + chunk[: i % 7]  # vary the bytes without holding them
                digest.update(piece)
                f.write(piece)
            assert not f.cheap_publish
            assert store.head("big/value.xcs") is None  # staged, not visible before the commit
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * MiB, f"peak {peak / MiB:.1f} MiB for a {total // MiB} MiB value"
    committed, uncommitted = container.get_blob_client(f"{azure_prefix}/big/value.xcs").get_block_list("all")
    assert len(committed) == 32 and uncommitted == []
    assert hashlib.sha256(store.get("big/value.xcs")).digest() == digest.digest()


def test_failed_multi_block_write_leaves_no_staged_blocks(small_block_store, raw_names) -> None:
    with pytest.raises(Boom):
        with small_block_store.writer("big/failed.xcs") as f:
            f.write(os.urandom(5 * MiB))
            raise Boom()
    assert raw_names() == [], "the staged blocks were not dropped"
    assert list(small_block_store.unfinished_uploads()) == []


def test_small_value_may_be_published_under_another_key(store) -> None:
    with store.new_object("staging/abc.xcs") as pending:
        pending.write(b"content-addressed")
        assert pending.cheap_publish
        pending.publish("blobs/digest.xcs")
    assert store.get("blobs/digest.xcs") == b"content-addressed"
    assert [i.key for i in store.list()] == ["blobs/digest.xcs"]


def test_multi_block_value_publishes_only_at_its_staged_key(small_block_store, raw_names) -> None:
    store = small_block_store
    with pytest.raises(StoreError, match="staged key"):
        with store.new_object("staging/abc.xcs") as pending:
            pending.write(b"\1" * (3 * MiB))
            assert not pending.cheap_publish
            pending.publish("blobs/other.xcs")
    assert raw_names() == []
    with store.new_object("staging/abc.xcs") as pending:
        pending.write(b"\2" * (3 * MiB))
        pending.publish(pending.staged_key)
    assert store.get("staging/abc.xcs") == b"\2" * (3 * MiB)


def test_killed_multi_block_writer_is_listed_then_removed(
    small_block_store, container, raw_names, azure_prefix: str
) -> None:
    store = small_block_store
    block = store.new_object("killed/v.xcs")
    pending = block.__enter__()
    pending.write(b"k" * (3 * MiB))  # three blocks, staged on background threads
    blob = container.get_blob_client(f"{azure_prefix}/killed/v.xcs")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if len(blob.get_block_list("uncommitted")[1]) == 3:
                break
        except ResourceNotFoundError:
            pass
        time.sleep(0.05)
    (upload,) = store.unfinished_uploads()
    assert upload.key == "killed/v.xcs" and upload.token == f"{azure_prefix}/killed/v.xcs"
    assert time.time() - 60 < upload.started <= time.time() + 5
    assert store.head("killed/v.xcs") is None and list(store.list()) == []
    store.remove_unfinished(upload)
    assert raw_names() == [] and list(store.unfinished_uploads()) == []


def test_remove_unfinished_keeps_an_object_committed_since(store, container, azure_prefix: str) -> None:
    write(store, "k.xcs", b"committed")
    blob = container.get_blob_client(f"{azure_prefix}/k.xcs")
    blob.stage_block("c3RyYXk=", b"stray block")  # what a killed overwrite leaves
    upload = UnfinishedUpload(key="k.xcs", started=0.0, token=f"{azure_prefix}/k.xcs")
    assert list(store.unfinished_uploads()) == []  # blocks on a committed blob are not listed
    store.remove_unfinished(upload)
    assert store.get("k.xcs") == b"committed"


def test_remove_unfinished_refuses_a_blob_outside_the_prefix(store) -> None:
    with pytest.raises(StoreError, match="not an upload"):
        store.remove_unfinished(UnfinishedUpload(key="x", started=0.0, token="elsewhere/x.xcs"))


@pytest.mark.parametrize("size", [100, 3 * MiB], ids=["one-put", "staged-blocks"])
def test_conditional_create_with_two_writers_has_one_winner(small_block_store, size: int) -> None:
    store = small_block_store
    barrier = threading.Barrier(2)
    outcomes: dict[int, str] = {}

    def writer(n: int) -> None:
        try:
            with store.new_object("race/k.xcs") as pending:
                pending.write(bytes([n]) * size)
                barrier.wait()
                pending.publish("race/k.xcs", if_absent=True)
            outcomes[n] = "won"
        except ObjectExistsError:
            outcomes[n] = "exists"
        except BaseException as exc:  # pragma: no cover - reported below
            outcomes[n] = repr(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes.values()) == ["exists", "won"], outcomes
    winner = next(n for n, o in outcomes.items() if o == "won")
    assert store.get("race/k.xcs") == bytes([winner]) * size


# ------------------------------------------------------------------ ranged reads


def test_ranged_reads_of_a_big_object(store) -> None:
    data = os.urandom(MiB) * 20  # 20 MiB: beyond the first read, in two staged blocks
    write(store, "big/ranged.xcs", data)
    reader = store.open_reader("big/ranged.xcs")
    try:
        assert reader.size == len(data)
        for offset, length in [(0, 10), (5, MiB), (FIRST_READ_BYTES - 3, 10), (15 * MiB, 3 * MiB),
                               (len(data) - 5, 100), (len(data), 10)]:
            assert reader.read_at(offset, length) == data[offset : offset + length], (offset, length)
        target = bytearray(4 * MiB)
        n = reader.readinto_at(18 * MiB, memoryview(target))
        assert n == 2 * MiB and bytes(target[:n]) == data[18 * MiB :]
    finally:
        reader.close()


def test_reader_never_mixes_two_versions(store) -> None:
    old = b"o" * (FIRST_READ_BYTES + MiB)
    write(store, "v.xcs", old)
    reader = store.open_reader("v.xcs")
    assert reader.read_at(0, 4) == b"oooo"  # served from the first read
    write(store, "v.xcs", b"n" * len(old))  # overwritten while the reader is open
    with pytest.raises(StoreReadError, match="changed"):
        reader.read_at(FIRST_READ_BYTES, 10)
    with pytest.raises(StoreReadError, match="changed"):
        reader.readinto_at(FIRST_READ_BYTES, memoryview(bytearray(10)))
    reader.close()


# ------------------------------------------------------------------ failures


def test_missing_container_is_a_store_error_not_a_missing_object(azure_client) -> None:
    store = AzureBlobStore(azure_client.get_container_client("no-such-container"), "p")
    with pytest.raises(StoreError) as info:
        store.get("k.xcs")
    assert not isinstance(info.value, ObjectMissingError)
    assert "ContainerNotFound" in str(info.value)
    with pytest.raises(StoreError):
        list(store.list())
    with pytest.raises(StoreError) as info:
        write(store, "k.xcs", b"x")
    assert "abfs://no-such-container/p/k.xcs" in str(info.value)


def test_wrong_account_key_is_refused(azurite, store, azure_prefix: str) -> None:
    from xcomstash.stores.azure import service_client

    write(store, "k.xcs", b"secret")
    bad = service_client(connection_string=azurite.connection_string.replace("Eby8", "AAAA"))
    bad_store = AzureBlobStore(bad.get_container_client("xcom"), azure_prefix)
    with pytest.raises(StoreError) as info:
        bad_store.get("k.xcs")
    assert not isinstance(info.value, ObjectMissingError)
    with pytest.raises(StoreError):
        write(bad_store, "k.xcs", b"overwrite")
    assert store.get("k.xcs") == b"secret"


@pytest.fixture
def proxy(azurite):
    """A TCP proxy in front of the session's Azurite: stopping it is, for the client, the
    server stopping (nothing listens on the endpoint; open connections are reset)."""
    from tests.harness.proxy import TcpProxy

    proxy = TcpProxy(azurite.port).start()
    yield proxy
    proxy.stop()


def test_stopped_server_is_unavailable_within_seconds(azurite, proxy, azure_prefix: str) -> None:
    client = azurite.client(timeout=1, port=proxy.port)
    store = AzureBlobStore(client.get_container_client("xcom"), azure_prefix)
    write(store, "k.xcs", b"x" * 100)
    reader = store.open_reader("k.xcs")
    proxy.stop()
    calls = {
        "get": lambda: store.get("k.xcs"),
        "open_reader": lambda: store.open_reader("k.xcs"),
        "write": lambda: write(store, "k.xcs", b"x"),
        "head": lambda: store.head("k.xcs"),
        "list": lambda: list(store.list()),
        "delete": lambda: store.delete("k.xcs"),
        "unfinished_uploads": lambda: list(store.unfinished_uploads()),
    }
    for name, call in calls.items():
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as info:
            call()
        assert time.monotonic() - started < 3, name
        assert not isinstance(info.value, ObjectMissingError), name
        assert store.root_uri in str(info.value), name
    reader.close()
    store.close()


def test_hung_server_times_out_as_unavailable(azurite, proxy, azure_prefix: str) -> None:
    client = azurite.client(timeout=0.5, retries=1, port=proxy.port)
    store = AzureBlobStore(client.get_container_client("xcom"), azure_prefix)
    write(store, "k.xcs", b"x")
    proxy.stall = True  # connections are accepted, requests read, nothing answered
    proxy.drop_all()
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as info:
        store.get("k.xcs")
    assert time.monotonic() - started < 5
    assert not isinstance(info.value, ObjectMissingError)
    store.close()


def test_azure_store_states_its_capabilities(store) -> None:
    capabilities = store.capabilities
    assert capabilities.multipart and capabilities.conditional_create
    assert not capabilities.cheap_publish and not capabilities.local


# ------------------------------------------------------------------ the engine, end to end


@pytest.fixture
def engine(azure_client, azure_prefix: str):
    from xcomstash.config import StashConfig
    from xcomstash.engine import Engine

    seen = []

    def factory(location):
        seen.append(location.conn_id)
        return azure_client

    engine = Engine(StashConfig(store_url=f"abfs://xcom/{azure_prefix}", threshold=0), clients=factory)
    assert seen == [None]  # no conn_id in the URL
    return engine


@pytest.fixture
def coordinate():
    from xcomstash.coordinate import XComCoordinate

    return XComCoordinate("azure dag", "manual__1", "make/frame", 2, "return_value")


def test_engine_round_trips_a_numpy_array(engine, coordinate, container, azure_prefix: str) -> None:
    import numpy as np

    from xcomstash.format.reference import Reference, is_reference

    arr = np.arange(200_000, dtype="float32").reshape(400, 500) / 7
    stored = engine.serialize(arr, coordinate)
    assert is_reference(stored)
    ref = Reference.from_json(stored)
    assert ref.uri.startswith(f"abfs://xcom/{azure_prefix}/")
    blob = container.get_blob_client(ref.uri[len("abfs://xcom/") :])
    assert blob.get_blob_properties().size == ref.size
    back = engine.deserialize(stored, coordinate)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    blob.delete_blob()
    with pytest.raises(ObjectMissingError) as info:
        engine.deserialize(stored, coordinate)
    assert info.value.uri == ref.uri


def test_engine_round_trips_a_dataframe(engine, coordinate) -> None:
    import numpy as np
    import pandas as pd

    df = pd.DataFrame(
        {
            "id": np.arange(5000, dtype="int64"),
            "x": np.linspace(0, 1, 5000),
            "name": [f"row {i}" for i in range(5000)],
            "when": pd.date_range("2024-01-01", periods=5000, freq="min", tz="UTC"),
        }
    )
    stored = engine.serialize(df, coordinate)
    pd.testing.assert_frame_equal(engine.deserialize(stored, coordinate), df)
    assert engine.purge(stored, coordinate) is True


# ------------------------------------------------------------------ Airflow wasb connections

RESULT_MARKER = "XCOMSTASH-TEST-RESULT "

# Airflow reads its configuration once per process from AIRFLOW_HOME: it runs in a child.
CHILD = """
import json, os, sys
from xcomstash.airflow.connections import client_for
from xcomstash.errors import ConfigError, StoreError
from xcomstash.stores import open_store

prefix = sys.argv[1]
result = {}

def attempt(name, url, key="conn.xcs"):
    try:
        store = open_store(url, clients=client_for)
        with store.writer(key) as f:
            f.write(name.encode())
        result[name] = [store.root_uri, store.get(key).decode(), [i.key for i in store.list()]]
    except (ConfigError, StoreError) as exc:
        result[name] = type(exc).__name__ + ": " + str(exc)

attempt("string", f"abfs://az_string@xcom/{prefix}/string")
attempt("key", f"wasb://az_key@xcom/{prefix}/key")
attempt("sas", f"abfs://az_sas@xcom/{prefix}/sas")
attempt("default", f"abfs://xcom/{prefix}/default")
attempt("adlfs", f"abfs://xcom@devstoreaccount1.dfs.core.windows.net/{prefix}/adlfs")
attempt("bad_key", f"abfs://az_bad@xcom/{prefix}/bad")
attempt("other_account", f"abfs://xcom@otheraccount.dfs.core.windows.net/{prefix}/other")
attempt("no_credentials", f"abfs://az_none@xcom/{prefix}/none")
attempt("garbage", f"abfs://az_garbage@xcom/{prefix}/garbage")
os.environ.pop("AIRFLOW__XCOMSTASH__ALLOW_HTTP_ENDPOINTS")
attempt("http_refused", f"abfs://az_key@xcom/{prefix}/refused")
print("%s" + json.dumps(result))
""" % RESULT_MARKER


def test_airflow_wasb_connections_build_the_client(
    azurite, container, azure_prefix: str, tmp_path, monkeypatch
) -> None:
    import json
    import subprocess
    import sys
    from datetime import datetime, timedelta, timezone

    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    from tests.harness.azurite_server import ACCOUNT, ACCOUNT_KEY

    sas = generate_account_sas(
        ACCOUNT, ACCOUNT_KEY, ResourceTypes(container=True, object=True),
        AccountSasPermissions(read=True, write=True, list=True, delete=True),
        expiry=datetime.now(timezone.utc) + timedelta(hours=1),
    )
    key_conn = {"conn_type": "wasb", "login": ACCOUNT, "password": ACCOUNT_KEY, "host": azurite.account_url}
    connections = {
        "AZ_STRING": {"conn_type": "wasb", "extra": {"connection_string": azurite.connection_string}},
        "AZ_KEY": key_conn,
        "AZ_SAS": {"conn_type": "wasb", "host": azurite.account_url, "extra": {"sas_token": sas}},
        "WASB_DEFAULT": key_conn,
        "AZ_BAD": {**key_conn, "password": ACCOUNT_KEY.replace("Eby8", "AAAA")},
        "AZ_NONE": {"conn_type": "wasb", "login": ACCOUNT, "host": azurite.account_url},
        "AZ_GARBAGE": {"conn_type": "wasb", "extra": {"connection_string": "not a connection string"}},
    }
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow_home"))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    for conn_id, conn in connections.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id}", json.dumps(conn))
    monkeypatch.setenv("AIRFLOW__XCOMSTASH__ALLOW_HTTP_ENDPOINTS", "True")
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, azure_prefix], capture_output=True, text=True, timeout=120
    )
    lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_MARKER)]
    assert proc.returncode == 0 and lines, f"child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    result = json.loads(lines[-1][len(RESULT_MARKER) :])

    base = f"abfs://xcom/{azure_prefix}"
    assert result["string"] == [f"{base}/string", "string", ["conn.xcs"]]
    assert result["key"] == [f"{base}/key", "key", ["conn.xcs"]]
    assert result["sas"] == [f"{base}/sas", "sas", ["conn.xcs"]]
    assert result["default"] == [f"{base}/default", "default", ["conn.xcs"]]  # wasb_default
    adlfs = f"abfs://xcom@devstoreaccount1.dfs.core.windows.net/{azure_prefix}/adlfs"
    assert result["adlfs"] == [adlfs, "adlfs", ["conn.xcs"]]
    assert result["bad_key"].startswith("StoreReadError") and "Azure error 403" in result["bad_key"]
    assert result["other_account"].startswith("ConfigError") and "otheraccount" in result["other_account"]
    assert result["no_credentials"].startswith("ConfigError") and "no credentials" in result["no_credentials"]
    assert result["garbage"].startswith("ConfigError: invalid Azure Blob Storage settings")
    assert result["http_refused"].startswith("ConfigError") and "plain HTTP" in result["http_refused"]
    assert ACCOUNT_KEY not in json.dumps(result) and sas not in json.dumps(result)
    # What the child wrote is really in Azurite, where the URL said.
    blob = container.get_blob_client(f"{azure_prefix}/key/conn.xcs")
    assert blob.download_blob().readall() == b"key"
