"""Fan-in on a real S3 (SeaweedFS): a mapped task's outputs pulled at once by
Engine.deserialize_many come back complete and in order, or fail with the first error."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from xcomstash import Engine, IntegrityError, ObjectMissingError, StashConfig, XComCoordinate
from xcomstash.format.reference import is_reference

pytestmark = pytest.mark.s3

BUCKET = "xcom"
N = 50


def coord(index: int) -> XComCoordinate:
    return XComCoordinate("fanin_dag", "manual__2026-04-04", "mapped", index, "return_value")


def make_engine(s3_client, s3_prefix: str, **config: Any) -> Engine:
    return Engine(
        StashConfig(store_url=f"s3://{BUCKET}/{s3_prefix}", threshold=0, **config),
        clients=lambda location: s3_client,
    )


def small_value(i: int) -> Any:
    kind = i % 3
    if kind == 0:
        return os.urandom(100 + i)
    if kind == 1:
        return {"index": i, "items": list(range(i))}
    return f"value number {i}"


@pytest.fixture
def fanin(s3_client, s3_prefix: str) -> tuple[Engine, list[Any], list[dict]]:
    engine = make_engine(s3_client, s3_prefix)
    values = [small_value(i) for i in range(N)]
    rows = [engine.serialize(v, coord(i)) for i, v in enumerate(values)]
    assert all(is_reference(r) for r in rows)
    return engine, values, rows


def s3_key(row: dict) -> str:
    return row["uri"][len(f"s3://{BUCKET}/") :]


def test_deserialize_many_returns_fifty_stored_values_in_order(fanin) -> None:
    engine, values, rows = fanin
    assert engine.deserialize_many(rows) == values
    assert engine.deserialize_many(rows[::-1]) == values[::-1]
    assert engine.deserialize_many(rows) == [engine.deserialize(r, readahead=False) for r in rows]


def test_deserialize_many_on_s3_with_inline_rows_between(fanin) -> None:
    engine, values, rows = fanin
    mixed_rows: list[Any] = []
    mixed_values: list[Any] = []
    for i, (row, value) in enumerate(zip(rows, values)):
        mixed_rows.append(row)
        mixed_values.append(value)
        if i % 4 == 0:
            mixed_rows.append({"inline": i})
            mixed_values.append({"inline": i})
    assert engine.deserialize_many(mixed_rows) == mixed_values


def test_deserialize_many_on_s3_through_a_read_cache(s3_client, s3_prefix: str, fanin, tmp_path: Path) -> None:
    _, values, rows = fanin
    engine = make_engine(s3_client, s3_prefix, cache_dir=str(tmp_path / "cache"))
    assert engine.deserialize_many(rows) == values
    assert (engine.store.hits, engine.store.misses) == (0, N)
    assert engine.deserialize_many(rows) == values
    assert (engine.store.hits, engine.store.misses) == (N, N)


def test_deserialize_many_on_s3_raises_the_first_failure_in_order(fanin, s3_client) -> None:
    engine, values, rows = fanin
    s3_client.delete_object(Bucket=BUCKET, Key=s3_key(rows[20]))
    other = engine.serialize(b"a replaced object", coord(99))  # rows[35]'s object replaced:
    s3_client.put_object(
        Bucket=BUCKET, Key=s3_key(rows[35]),
        Body=s3_client.get_object(Bucket=BUCKET, Key=s3_key(other))["Body"].read(),
    )
    with pytest.raises(ObjectMissingError) as info:
        engine.deserialize_many(rows)
    assert info.value.uri == rows[20]["uri"] and info.value.coordinate == coord(20)
    with pytest.raises(IntegrityError) as info2:
        engine.deserialize_many(rows[21:])
    assert info2.value.uri == rows[35]["uri"]
    assert engine.deserialize_many(rows[:20]) == values[:20]
