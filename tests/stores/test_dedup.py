"""Dedup: identical payloads pushed in one DAG run are stored once, as a content-addressed blob
with one link per XCom, on the local store and on a real SeaweedFS S3."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xcomstash.config import StashConfig
from xcomstash.coordinate import XComCoordinate, parse_blob_key, parse_link_key
from xcomstash.engine import Engine
from xcomstash.errors import ObjectMissingError, PurgeRefusedError
from xcomstash.stores.s3 import PART_SIZE

BUCKET = "xcom"
RUN = "manual__2026-11-23"


def coord(index: int, task: str = "fan_out", run: str = RUN, key: str = "return_value") -> XComCoordinate:
    return XComCoordinate("dedup_dag", run, task, index, key)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def engine(request, tmp_path: Path) -> Engine:
    if request.param == "local":
        return Engine(StashConfig(store_url=f"file://{tmp_path / 'store'}", threshold=0))
    client = request.getfixturevalue("s3_client")
    prefix = f"dedup-{uuid.uuid4().hex[:8]}"
    return Engine(
        StashConfig(store_url=f"s3://{BUCKET}/{prefix}", threshold=0, cache_dir=None),
        clients=lambda location: client,
    )


def keys(engine: Engine) -> list[str]:
    return sorted(info.key for info in engine.store.list())


def blobs(engine: Engine) -> list[str]:
    return [k for k in keys(engine) if parse_blob_key(k)]


def links(engine: Engine) -> list[str]:
    return [k for k in keys(engine) if parse_link_key(k)]


def table(rows: int = 20_000, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.random(rows), "name": [f"n{i % 97}" for i in range(rows)]})


def test_identical_payloads_of_a_mapped_fan_out_are_stored_once(engine: Engine) -> None:
    rows = [engine.serialize(table(), coord(i)) for i in range(5)]
    assert len({r["uri"] for r in rows}) == 1
    assert len(blobs(engine)) == 1
    assert len(links(engine)) == 5
    for i, r in enumerate(rows):
        assert r["xcom"] == coord(i).as_dict()
        pd.testing.assert_frame_equal(engine.deserialize(r), table())


def test_every_link_names_its_xcom_and_the_blob(engine: Engine) -> None:
    rows = [engine.serialize(b"same bytes" * 500, coord(i)) for i in range(3)]
    (blob,) = blobs(engine)
    assert {engine.store.get(k).decode() for k in links(engine)} == {blob}
    parsed = [parse_link_key(k) for k in links(engine)]
    assert {(p.task_id, p.map_index, p.key) for p in parsed} == {("fan_out", i, "return_value") for i in range(3)}
    assert {p.blob_key for p in parsed} == {blob}
    assert engine.store.key_for(rows[0]["uri"]) == blob


def test_dedup_keeps_both_references_readable_after_one_is_purged(engine: Engine) -> None:
    first = engine.serialize(table(), coord(0))
    second = engine.serialize(table(), coord(1))
    assert first["uri"] == second["uri"]

    assert engine.purge(first, coord(0)) is True
    pd.testing.assert_frame_equal(engine.deserialize(second), table())
    assert len(blobs(engine)) == 1 and len(links(engine)) == 1

    assert engine.purge(second, coord(1)) is True
    assert keys(engine) == []  # the last link gone, the blob with it
    with pytest.raises(ObjectMissingError):
        engine.deserialize(first)


def test_purge_without_a_coordinate_is_refused_and_deletes_nothing(engine: Engine) -> None:
    """Without the XCom whose row is going, a reference copied into any row could name what
    to delete: refused (typed), nothing deleted."""
    first = engine.serialize(b"shared" * 1000, coord(0))
    before = keys(engine)
    with pytest.raises(PurgeRefusedError, match="must name the XCom"):
        engine.purge(first)
    assert keys(engine) == before
    assert engine.deserialize(first) == b"shared" * 1000


def test_purge_is_idempotent_and_keeps_a_blob_other_xcoms_link(engine: Engine) -> None:
    rows = [engine.serialize(b"v" * 5000, coord(i)) for i in range(3)]
    for _ in range(3):
        engine.purge(rows[0], coord(0))
    assert engine.deserialize(rows[1]) == engine.deserialize(rows[2]) == b"v" * 5000
    assert len(links(engine)) == 2


def test_different_payloads_and_other_runs_get_their_own_blobs(engine: Engine) -> None:
    a = engine.serialize(b"a" * 5000, coord(0))
    b = engine.serialize(b"b" * 5000, coord(1))
    a_other_run = engine.serialize(b"a" * 5000, coord(0, run="manual__other"))
    assert len({a["uri"], b["uri"], a_other_run["uri"]}) == 3
    assert len(blobs(engine)) == 3
    engine.purge(a, coord(0))
    assert engine.deserialize(a_other_run) == b"a" * 5000


def test_same_payload_under_another_codec_or_type_is_another_blob(engine: Engine) -> None:
    as_bytes = engine.serialize(b"\x00" * 4000, coord(0))
    as_array = engine.serialize(np.zeros(1000, dtype="float32"), coord(1))
    assert as_bytes["uri"] != as_array["uri"]
    assert engine.deserialize(as_bytes) == b"\x00" * 4000
    np.testing.assert_array_equal(engine.deserialize(as_array), np.zeros(1000, dtype="float32"))


def test_concurrent_identical_pushes_all_read_back_and_share_one_blob(engine: Engine) -> None:
    value = os.urandom(200_000)
    with ThreadPoolExecutor(8) as pool:
        rows = list(pool.map(lambda i: engine.serialize(value, coord(i)), range(16)))
    assert len({r["uri"] for r in rows}) == 1
    assert blobs(engine) == [engine.store.key_for(rows[0]["uri"])]
    assert len(links(engine)) == 16
    assert all(engine.deserialize(r) == value for r in rows)


def test_a_retry_with_a_new_value_leaves_other_xcoms_sharing_the_old_one_intact(engine: Engine) -> None:
    old = [engine.serialize(b"old" * 2000, coord(i)) for i in range(2)]
    engine.purge(old[0], coord(0))  # what Airflow does before a retry of map index 0
    new = engine.serialize(b"new" * 2000, coord(0))
    assert engine.deserialize(new) == b"new" * 2000
    assert engine.deserialize(old[1]) == b"old" * 2000
    assert len(blobs(engine)) == 2


@pytest.mark.s3
def test_large_multipart_duplicate_is_not_uploaded_twice_and_stays_readable(s3_client) -> None:
    """Above one part an S3 blob stays where it was streamed (no server-side copy), and a
    duplicate is found through the links and not stored (its multipart upload is aborted)."""
    prefix = f"dedup-big-{uuid.uuid4().hex[:8]}"
    engine = Engine(
        StashConfig(store_url=f"s3://{BUCKET}/{prefix}", threshold=0, compression="none"),
        clients=lambda location: s3_client,
    )
    value = os.urandom(PART_SIZE + 3 * 1024 * 1024)  # two parts
    first = engine.serialize(value, coord(0))
    second = engine.serialize(value, coord(1))
    assert first["uri"] == second["uri"] and first["size"] > PART_SIZE
    listed = [i for i in engine.store.list()]
    assert [i.key for i in listed if parse_blob_key(i.key)] == [engine.store.key_for(first["uri"])]
    assert not [i for i in listed if ".tmp-" in i.key]  # no staging object left behind
    uploads = s3_client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", [])
    assert uploads == []  # the duplicate's upload was aborted, not left open
    assert engine.deserialize(first) == value and engine.deserialize(second) == value
    blob_key = engine.store.key_for(first["uri"])
    assert parse_blob_key(blob_key).hex_digest is None  # kept under its streamed name
    assert {engine.store.get(k).decode() for k in links(engine)} == {blob_key}  # links name it
    engine.purge(first, coord(0))
    assert engine.deserialize(second) == value
    engine.purge(second, coord(1))
    assert keys(engine) == []


def test_dedup_off_writes_one_object_per_xcom(tmp_path: Path) -> None:
    engine = Engine(StashConfig(store_url=f"file://{tmp_path}", threshold=0, dedup=False))
    rows = [engine.serialize(b"same" * 1000, coord(i)) for i in range(3)]
    assert len({r["uri"] for r in rows}) == 3
    assert keys(engine) == sorted(coord(i).object_key() for i in range(3))


@pytest.mark.s3
def test_a_stale_link_to_other_bytes_of_the_same_size_is_never_reused(s3_client) -> None:
    """Dedup of a multipart upload trusts a link only after reading the linked object's
    layout: a link naming other bytes must not make a push reference them."""
    prefix = f"dedup-stale-{uuid.uuid4().hex[:8]}"
    engine = Engine(
        StashConfig(store_url=f"s3://{BUCKET}/{prefix}", threshold=0, compression="none"),
        clients=lambda location: s3_client,
    )
    size = PART_SIZE + 1024 * 1024
    a, b = os.urandom(size), os.urandom(size)
    row_a = engine.serialize(a, coord(0))
    row_b = engine.serialize(b, coord(1))
    key_a, key_b = engine.store.key_for(row_a["uri"]), engine.store.key_for(row_b["uri"])
    link_b = coord(1).link_key(row_b["digest"])
    with engine.store.writer(link_b) as sink:  # the link of b now names a's object
        sink.write(key_a.encode())
    engine.store.delete(key_b)

    again = engine.serialize(b, coord(2))
    assert engine.store.key_for(again["uri"]) != key_a
    assert engine.deserialize(again) == b
    assert engine.deserialize(row_a) == a


@pytest.mark.s3
def test_a_multipart_upload_cannot_be_published_under_another_key(s3_client) -> None:
    from xcomstash.errors import StoreError
    from xcomstash.stores.s3 import S3Store

    store = S3Store(s3_client, BUCKET, f"pub-{uuid.uuid4().hex[:8]}")
    with store.new_object("r/.blobs/s-staged.xcs") as pending:
        pending.write(os.urandom(PART_SIZE + 1))
        assert not pending.cheap_publish
        with pytest.raises(StoreError, match="staged key"):
            pending.publish("r/.blobs/elsewhere.xcs")
    assert list(store.list()) == []
