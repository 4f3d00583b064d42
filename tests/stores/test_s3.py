"""S3Store against a real SeaweedFS: the Store contract, plus what only S3 has to get right
(multipart uploads, pagination, credentials, an unreachable endpoint)."""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.harness.servers import free_port, s3_client
from xcomstash.testing import Boom, StoreContract, write
from xcomstash.errors import (
    InvalidReferenceError,
    ObjectMissingError,
    StoreError,
    StoreUnavailableError,
)
from xcomstash.stores import open_store
from xcomstash.stores.s3 import S3Store

pytestmark = pytest.mark.s3


@pytest.fixture
def store(s3_client, s3_server, s3_prefix: str) -> S3Store:
    return S3Store(s3_client, s3_server.bucket, s3_prefix)


@pytest.fixture
def raw_names(s3_client, s3_server, s3_prefix: str):
    """Every object and every unfinished multipart upload under the store's prefix."""

    def names() -> list[str]:
        found = []
        pages = s3_client.get_paginator("list_objects_v2").paginate(
            Bucket=s3_server.bucket, Prefix=s3_prefix + "/"
        )
        for page in pages:
            found += [o["Key"] for o in page.get("Contents", [])]
        uploads = s3_client.list_multipart_uploads(Bucket=s3_server.bucket, Prefix=s3_prefix + "/")
        found += [f"(upload) {u['Key']}" for u in uploads.get("Uploads", [])]
        return sorted(found)

    return names


class TestS3StoreContract(StoreContract):
    pass


# ------------------------------------------------------------------ layout and URLs


def test_objects_land_under_prefix(store: S3Store, s3_client, s3_prefix: str) -> None:
    write(store, "d/r/t/0/v.xcs", b"x")
    assert store.root_uri == f"s3://xcom/{s3_prefix}"
    assert store.uri_for("d/r/t/0/v.xcs") == f"s3://xcom/{s3_prefix}/d/r/t/0/v.xcs"
    body = s3_client.get_object(Bucket="xcom", Key=f"{s3_prefix}/d/r/t/0/v.xcs")["Body"].read()
    assert body == b"x"


def test_store_without_prefix(s3_client, s3_prefix: str) -> None:
    store = S3Store(s3_client, "xcom")
    assert store.root_uri == "s3://xcom"
    key = f"{s3_prefix}/k.xcs"
    try:
        write(store, key, b"rootless")
        assert store.key_for("s3://xcom/" + key) == key
        assert store.get(key) == b"rootless"
        assert [i.key for i in store.list(s3_prefix)] == [key]
        with pytest.raises(InvalidReferenceError):
            store.key_for("s3://xcom2/" + key)
    finally:
        store.delete(key)


def test_sibling_prefix_is_not_listed(s3_client, s3_prefix: str) -> None:
    inner = S3Store(s3_client, "xcom", f"{s3_prefix}/a")
    sibling = S3Store(s3_client, "xcom", f"{s3_prefix}/ab")
    write(inner, "k.xcs", b"1")
    write(sibling, "k.xcs", b"2")
    assert [i.key for i in inner.list()] == ["k.xcs"]
    assert inner.get("k.xcs") == b"1"
    with pytest.raises(InvalidReferenceError):
        inner.key_for(sibling.uri_for("k.xcs"))


def test_open_store_s3_url_passes_conn_id(s3_client, s3_prefix: str) -> None:
    seen = []

    def factory(location):
        seen.append(location.conn_id)
        return s3_client

    store = open_store(f"s3://my_conn@xcom/{s3_prefix}/deep/", clients=factory)
    assert seen == ["my_conn"]
    assert isinstance(store, S3Store)
    assert store.root_uri == f"s3://xcom/{s3_prefix}/deep"
    write(store, "k.xcs", b"via open_store")
    assert store.get("k.xcs") == b"via open_store"
    open_store(f"s3://xcom/{s3_prefix}", clients=factory)
    assert seen == ["my_conn", None]


# ------------------------------------------------------------------ big objects, many objects


def test_large_object_multipart_round_trip(store: S3Store, s3_client, s3_prefix: str) -> None:
    data = os.urandom(1 << 20) * 40  # 40 MiB: above boto3's 8 MiB multipart threshold
    with store.writer("big/value.xcs") as f:
        for start in range(0, len(data), 3 << 20):
            f.write(data[start : start + (3 << 20)])
        assert store.head("big/value.xcs") is None  # nothing visible before the upload completes
    info = store.head("big/value.xcs")
    assert info is not None and info.size == len(data)
    etag = s3_client.head_object(Bucket="xcom", Key=f"{s3_prefix}/big/value.xcs")["ETag"]
    assert "-" in etag, f"expected a multipart upload, got ETag {etag}"
    got = store.get("big/value.xcs")
    assert len(got) == len(data)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_failed_large_write_leaves_nothing(store: S3Store, raw_names) -> None:
    with pytest.raises(Boom):
        with store.writer("big/failed.xcs") as f:
            for _ in range(40):  # 40 MiB: parts are already uploaded when the task fails
                f.write(b"\0" * (1 << 20))
            raise Boom()
    assert raw_names() == [], "the multipart upload was not aborted"
    assert store.head("big/failed.xcs") is None


def test_failed_large_overwrite_keeps_old_object(store: S3Store, raw_names) -> None:
    write(store, "big/k.xcs", b"old")
    with pytest.raises(Boom):
        with store.writer("big/k.xcs") as f:
            for _ in range(40):
                f.write(b"\1" * (1 << 20))
            raise Boom()
    assert store.get("big/k.xcs") == b"old"
    assert len(raw_names()) == 1


def test_reader_ranges_on_large_object(store: S3Store) -> None:
    data = os.urandom(1 << 20) * 20  # 20 MiB: more than one GET
    write(store, "big/ranged.xcs", data)
    reader = store.open_reader("big/ranged.xcs")
    try:
        assert reader.size == len(data)
        for offset, length in [(0, 10), (5, 1 << 20), ((8 << 20) - 3, 10), (15 << 20, 3 << 20),
                               (len(data) - 5, 100), (len(data), 10)]:
            assert reader.read_at(offset, length) == data[offset : offset + length], (offset, length)
        target = bytearray(4 << 20)
        n = reader.readinto_at((18 << 20), memoryview(target))
        assert n == 2 << 20 and bytes(target[:n]) == data[18 << 20 :]
    finally:
        reader.close()


def test_list_paginates_past_1000_keys(store: S3Store, s3_client, s3_prefix: str) -> None:
    keys = [f"many/{i:05d}.xcs" for i in range(1050)]

    def put(key: str) -> None:
        s3_client.put_object(Bucket="xcom", Key=f"{s3_prefix}/{key}", Body=b"x" * 3)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, keys))
    listed = list(store.list("many"))
    assert sorted(i.key for i in listed) == keys
    assert {i.size for i in listed} == {3}


# ------------------------------------------------------------------ failures


def test_missing_bucket_is_a_store_error_not_a_missing_object(s3_client) -> None:
    store = S3Store(s3_client, "no-such-bucket-xcs", "p")
    with pytest.raises(StoreError) as info:
        store.get("k.xcs")
    assert not isinstance(info.value, ObjectMissingError)
    with pytest.raises(StoreError):
        list(store.list())
    # (No write here: SeaweedFS creates a missing bucket on PutObject for an admin identity.)


@pytest.fixture
def bad_credentials_store(s3_server, s3_prefix: str) -> S3Store:
    client = s3_client(
        s3_server.endpoint_url,
        s3_server.access_key,
        "not-the-secret",
        retries={"total_max_attempts": 2, "mode": "standard"},
    )
    return S3Store(client, s3_server.bucket, s3_prefix)


def test_wrong_credentials_get(bad_credentials_store: S3Store, store: S3Store) -> None:
    write(store, "k.xcs", b"secret data")  # exists, so a refusal is not "missing"
    with pytest.raises(StoreError) as info:
        bad_credentials_store.get("k.xcs")
    assert not isinstance(info.value, ObjectMissingError)
    assert "SignatureDoesNotMatch" in str(info.value) or "AccessDenied" in str(info.value)
    with pytest.raises(StoreError) as info:
        bad_credentials_store.open_reader("k.xcs")
    assert not isinstance(info.value, ObjectMissingError)


def test_wrong_credentials_write(bad_credentials_store: S3Store, store: S3Store) -> None:
    with pytest.raises(StoreError):
        write(bad_credentials_store, "k.xcs", b"x")
    assert store.head("k.xcs") is None


def test_wrong_credentials_head_list_delete(bad_credentials_store: S3Store, store: S3Store) -> None:
    write(store, "k.xcs", b"x")
    with pytest.raises(StoreError):
        bad_credentials_store.head("k.xcs")
    with pytest.raises(StoreError):
        list(bad_credentials_store.list())
    with pytest.raises(StoreError):
        bad_credentials_store.delete("k.xcs")
    assert store.get("k.xcs") == b"x"


@pytest.fixture
def unreachable_store() -> S3Store:
    port = free_port()  # nothing listens there: connections are refused at once
    client = s3_client(
        f"http://127.0.0.1:{port}",
        "testkey",
        "testsecret",
        connect_timeout=1,
        read_timeout=1,
        retries={"total_max_attempts": 2, "mode": "standard"},  # one retry
    )
    return S3Store(client, "xcom", "p")


@pytest.mark.parametrize("operation", ["get", "open_reader", "write", "head", "list", "delete"])
def test_unreachable_endpoint_is_unavailable_quickly(unreachable_store: S3Store, operation: str) -> None:
    calls = {
        "get": lambda s: s.get("k.xcs"),
        "open_reader": lambda s: s.open_reader("k.xcs"),
        "write": lambda s: write(s, "k.xcs", b"x"),
        "head": lambda s: s.head("k.xcs"),
        "list": lambda s: list(s.list()),
        "delete": lambda s: s.delete("k.xcs"),
    }
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as info:
        calls[operation](unreachable_store)
    assert time.monotonic() - started < 10
    assert not isinstance(info.value, ObjectMissingError)


def test_s3_store_states_multipart_and_no_cheap_publish(store: S3Store) -> None:
    capabilities = store.capabilities
    assert capabilities.multipart and not capabilities.cheap_publish and not capabilities.local
