"""pyarrow Tables and RecordBatches through the whole engine: schema (with metadata) and data
come back equal, and a RecordBatch comes back as a RecordBatch."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from pathlib import Path

import pyarrow as pa
import pytest

from tests.codecs.conftest import COORDINATE
from xcomstash import Engine, StashConfig
from xcomstash.format.reference import is_reference


def table() -> pa.Table:
    schema = pa.schema(
        [
            pa.field("i", pa.int64(), nullable=False),
            pa.field("f", pa.float32()),
            pa.field("s", pa.string(), metadata={b"unit": b"none"}),
            pa.field("ls", pa.large_string()),
            pa.field("d", pa.dictionary(pa.int8(), pa.string())),
            pa.field("ts", pa.timestamp("us", tz="America/New_York")),
            pa.field("dec", pa.decimal128(12, 3)),
            pa.field("lst", pa.list_(pa.int16())),
            pa.field("st", pa.struct([("x", pa.int32()), ("y", pa.binary())])),
            pa.field("m", pa.map_(pa.string(), pa.int64())),
            pa.field("n", pa.null()),
        ],
        metadata={b"producer": b"test", b"version": b"1"},
    )
    return pa.table(
        {
            "i": [1, 2, 3],
            "f": [1.5, None, float("-inf")],  # NaN != NaN for .equals: see the NaN test
            "s": ["ü", None, ""],
            "ls": ["a", "b", None],
            "d": pa.array(["x", None, "x"]).dictionary_encode().cast(pa.dictionary(pa.int8(), pa.string())),
            "ts": [dt.datetime(2024, 1, 1, 12), None, dt.datetime(1970, 1, 1)],
            "dec": [decimal.Decimal("1.500"), None, decimal.Decimal("-2.250")],
            "lst": [[1, 2], [], None],
            "st": [{"x": 1, "y": b"\x00"}, None, {"x": None, "y": b"z"}],
            "m": [[("k", 1)], [], None],
            "n": [None, None, None],
        },
        schema=schema,
    )


def test_table_round_trips_with_schema_and_metadata(roundtrip) -> None:
    t = table()
    out = roundtrip(t)
    assert type(out) is pa.Table
    assert out.schema.equals(t.schema, check_metadata=True)
    assert out.equals(t, check_metadata=True)


def test_nan_and_negative_zero_floats_keep_their_bits(roundtrip) -> None:
    t = pa.table({"f": pa.array([float("nan"), -0.0, None], pa.float64())})
    out = roundtrip(t)
    nan, negzero, missing = out.column("f").to_pylist()
    assert math.isnan(nan)
    assert math.copysign(1.0, negzero) == -1.0
    assert missing is None


def test_record_batch_comes_back_as_a_record_batch(roundtrip) -> None:
    batch = table().combine_chunks().to_batches()[0]
    out = roundtrip(batch)
    assert type(out) is pa.RecordBatch
    assert out.schema.equals(batch.schema, check_metadata=True)
    assert out.equals(batch, check_metadata=True)


def test_empty_record_batch_keeps_schema_and_dictionary(roundtrip) -> None:
    batch = table().slice(0, 0).combine_chunks().to_batches()
    batch = batch[0] if batch else pa.RecordBatch.from_pylist([], schema=table().schema)
    out = roundtrip(batch)
    assert type(out) is pa.RecordBatch
    assert out.num_rows == 0
    assert out.equals(batch, check_metadata=True)


def test_table_with_zero_rows_keeps_schema_and_dictionary_values(roundtrip) -> None:
    t = pa.table(
        {"d": pa.DictionaryArray.from_arrays(pa.array([], pa.int8()), pa.array(["a", "b"]))}
    )
    out = roundtrip(t)
    assert out.num_rows == 0
    assert out.schema.equals(t.schema, check_metadata=True)
    assert out.column("d").num_chunks == 1
    assert out.column("d").chunk(0).dictionary.to_pylist() == ["a", "b"]


def test_table_with_columns_but_no_rows_and_table_without_columns(roundtrip) -> None:
    empty = table().slice(0, 0)
    out = roundtrip(empty)
    assert out.num_rows == 0 and out.schema.equals(empty.schema, check_metadata=True)

    no_columns = pa.table({"a": [1, 2, 3]}).drop_columns(["a"])
    out = roundtrip(no_columns)
    assert out.num_columns == 0
    assert out.num_rows == 3


def test_chunked_table_round_trips_with_the_same_rows(roundtrip) -> None:
    t = pa.concat_tables([table(), table(), table()])
    assert t.column("i").num_chunks == 3
    out = roundtrip(t)
    assert out.equals(t, check_metadata=True)


def test_table_larger_than_one_chunk_round_trips(roundtrip) -> None:
    n = (1 << 20) + 17  # more rows than write_ipc's max_chunksize
    t = pa.table({"i": pa.array(range(n), pa.int64()), "s": pa.array(["ab", "c"] * (n // 2) + ["x"])})
    out = roundtrip(t)
    assert out.num_rows == n
    assert out.equals(t)


@pytest.mark.parametrize("kind", ["Table", "RecordBatch"])
def test_arrow_values_are_stored_even_when_far_below_threshold(store_root: Path, kind: str) -> None:
    engine = Engine(StashConfig(store_url=f"file://{store_root}", threshold=1 << 30))
    t = pa.table({"a": [1, 2]})
    value = t if kind == "Table" else t.to_batches()[0]
    stored = engine.serialize(value, COORDINATE)
    assert is_reference(stored)
    assert stored["codec"] == "arrow.ipc"
    assert stored["type"] == f"pyarrow.{kind}"
    assert stored["summary"] == f"{kind} 2 rows x 1 cols"
    out = engine.deserialize(stored)
    assert type(out) is type(value) and out.equals(value)
