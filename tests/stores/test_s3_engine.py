"""The engine end to end on a real S3 (SeaweedFS): values in, references out, values back,
and the failures a reader must see when the object behind a reference changes."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest

from xcomstash.config import StashConfig
from xcomstash.coordinate import XComCoordinate
from xcomstash.engine import Engine
from xcomstash.errors import IntegrityError, ObjectMissingError
from xcomstash.format.reference import Reference, is_reference

pytestmark = pytest.mark.s3

STORE_URL = "s3://xcom/some/prefix"


@pytest.fixture
def engine(s3_client) -> Engine:
    seen = []

    def factory(location):
        seen.append(location.conn_id)
        return s3_client

    engine = Engine(StashConfig(store_url=STORE_URL, threshold=0), clients=factory)
    assert all(conn_id is None for conn_id in seen)  # no conn_id in the URL
    return engine


@pytest.fixture
def coordinate() -> XComCoordinate:
    # A fresh run id per test keeps tests apart in the shared bucket.
    return XComCoordinate("s3 dag", f"manual__{uuid.uuid4().hex}", "make/frame", 2, "return_value")


def s3_key(ref: Reference) -> str:
    assert ref.uri.startswith("s3://xcom/")
    return ref.uri[len("s3://xcom/") :]


def test_dataframe_round_trip(engine: Engine, coordinate: XComCoordinate, s3_client) -> None:
    df = pd.DataFrame(
        {
            "id": np.arange(5000, dtype="int64"),
            "x": np.linspace(0, 1, 5000),
            "name": [f"row {i}" for i in range(5000)],
            "when": pd.date_range("2024-01-01", periods=5000, freq="min", tz="UTC"),
        }
    )
    stored = engine.serialize(df, coordinate)
    assert is_reference(stored)
    ref = Reference.from_json(stored)
    assert ref.uri == f"{STORE_URL}/{coordinate.blob_key(ref.digest)}"
    head = s3_client.head_object(Bucket="xcom", Key=s3_key(ref))
    assert head["ContentLength"] == ref.size
    back = engine.deserialize(stored, coordinate)
    pd.testing.assert_frame_equal(back, df)


def test_numpy_array_round_trip(engine: Engine, coordinate: XComCoordinate) -> None:
    arr = np.arange(200_000, dtype="float32").reshape(400, 500) / 7
    stored = engine.serialize(arr, coordinate)
    assert is_reference(stored)
    back = engine.deserialize(stored, coordinate)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_json_value_round_trip(engine: Engine, coordinate: XComCoordinate) -> None:
    value = {"rows": [{"a": i, "b": str(i)} for i in range(100)], "ok": True}
    stored = engine.serialize(value, coordinate)
    assert is_reference(stored)  # threshold=0 offloads everything
    assert engine.deserialize(stored, coordinate) == value


def test_retry_with_another_value_gets_its_own_blob_and_both_read(
    engine: Engine, coordinate: XComCoordinate
) -> None:
    first = engine.serialize(np.zeros(1000), coordinate)
    second = engine.serialize(np.ones(1000), coordinate)
    assert Reference.from_json(first).uri != Reference.from_json(second).uri
    np.testing.assert_array_equal(engine.deserialize(second, coordinate), np.ones(1000))
    np.testing.assert_array_equal(engine.deserialize(first, coordinate), np.zeros(1000))


def test_per_xcom_layout_overwrite_by_retry_reads_latest(s3_client, coordinate: XComCoordinate) -> None:
    engine = Engine(
        StashConfig(store_url=STORE_URL, threshold=0, dedup=False), clients=lambda location: s3_client
    )
    first = engine.serialize(np.zeros(1000), coordinate)
    second = engine.serialize(np.ones(1000), coordinate)
    assert Reference.from_json(first).uri == Reference.from_json(second).uri
    np.testing.assert_array_equal(engine.deserialize(second, coordinate), np.ones(1000))
    with pytest.raises(IntegrityError):  # the old reference no longer matches the object
        engine.deserialize(first, coordinate)


def test_deleted_object_is_missing_with_coordinate_and_uri(
    engine: Engine, coordinate: XComCoordinate, s3_client
) -> None:
    stored = engine.serialize(np.arange(1000), coordinate)
    ref = Reference.from_json(stored)
    s3_client.delete_object(Bucket="xcom", Key=s3_key(ref))
    with pytest.raises(ObjectMissingError) as info:
        engine.deserialize(stored, coordinate)
    error = info.value
    assert error.uri == ref.uri
    assert error.coordinate == coordinate
    message = str(error)
    assert ref.uri in message
    assert coordinate.dag_id in message and coordinate.run_id in message
    assert coordinate.task_id in message and "map_index=2" in message


def test_missing_object_without_coordinate_names_the_one_the_reference_names(
    engine: Engine, coordinate: XComCoordinate, s3_client
) -> None:
    stored = engine.serialize(np.arange(10), coordinate)
    ref = Reference.from_json(stored)
    s3_client.delete_object(Bucket="xcom", Key=s3_key(ref))
    with pytest.raises(ObjectMissingError) as info:
        engine.deserialize(stored)
    assert info.value.coordinate == coordinate
    assert ref.uri in str(info.value)


def test_flipped_bytes_are_an_integrity_error(
    engine: Engine, coordinate: XComCoordinate, s3_client
) -> None:
    df = pd.DataFrame({"a": range(1000)})
    stored = engine.serialize(df, coordinate)
    ref = Reference.from_json(stored)
    key = s3_key(ref)
    data = bytearray(s3_client.get_object(Bucket="xcom", Key=key)["Body"].read())
    assert len(data) == ref.size
    data[len(data) // 2] ^= 0xFF
    s3_client.put_object(Bucket="xcom", Key=key, Body=bytes(data))
    with pytest.raises(IntegrityError) as info:
        engine.deserialize(stored, coordinate)
    assert info.value.uri == ref.uri
    assert info.value.coordinate == coordinate
    assert "digest" in str(info.value)


def test_truncated_object_is_an_integrity_error(
    engine: Engine, coordinate: XComCoordinate, s3_client
) -> None:
    stored = engine.serialize(np.arange(1000), coordinate)
    key = s3_key(Reference.from_json(stored))
    data = s3_client.get_object(Bucket="xcom", Key=key)["Body"].read()
    s3_client.put_object(Bucket="xcom", Key=key, Body=data[:-10])
    with pytest.raises(IntegrityError, match="truncated"):
        engine.deserialize(stored, coordinate)


def test_purge_deletes_the_object(engine: Engine, coordinate: XComCoordinate, s3_client) -> None:
    stored = engine.serialize(np.arange(10), coordinate)
    key = s3_key(Reference.from_json(stored))
    assert engine.purge(stored, coordinate) is True
    assert s3_client.list_objects_v2(Bucket="xcom", Prefix=key).get("KeyCount", 0) == 0
    assert engine.purge(stored, coordinate) is True  # idempotent
