"""polars DataFrames through the whole engine: schema and values come back exactly; columns of
arbitrary Python objects are refused at push time instead of being stored as pointers."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tests.codecs.conftest import COORDINATE
from xcomstash import Engine, StashConfig, UnsupportedTypeError
from xcomstash.format.reference import is_reference


def assert_same_polars(out: object, expected: pl.DataFrame) -> None:
    assert type(out) is pl.DataFrame
    assert out.schema == expected.schema
    assert_frame_equal(out, expected, check_dtypes=True, check_column_order=True, check_exact=True)


def test_frame_with_many_dtypes_round_trips(roundtrip) -> None:
    df = pl.DataFrame(
        {
            "i8": pl.Series([1, None, -128], dtype=pl.Int8),
            "u64": pl.Series([2**64 - 1, 0, None], dtype=pl.UInt64),
            "f64": [1.5, float("nan"), None],
            "f32": pl.Series([-0.0, float("inf"), 3.25], dtype=pl.Float32),
            "s": ["ü", None, ""],
            "b": [True, None, False],
            "cat": pl.Series(["a", "b", None], dtype=pl.Categorical),
            "enum": pl.Series(["x", "y", "x"], dtype=pl.Enum(["y", "x"])),
            "dt_tz": pl.Series([dt.datetime(2024, 3, 31, 1, 30), None, dt.datetime(1970, 1, 1)]).dt.replace_time_zone(
                "Europe/Paris", ambiguous="earliest", non_existent="null"
            ),
            "dt_ms": pl.Series([dt.datetime(2024, 1, 1), None, dt.datetime(2000, 1, 1)], dtype=pl.Datetime("ms")),
            "dur": [dt.timedelta(seconds=1), None, dt.timedelta(days=-2)],
            "date": [dt.date(2024, 2, 29), None, dt.date(1, 1, 1)],
            "time": [dt.time(1, 2, 3, 4), None, dt.time(23, 59)],
            "dec": pl.Series([decimal.Decimal("1.23"), None, decimal.Decimal("-0.01")], dtype=pl.Decimal(10, 2)),
            "list": [[1, 2], [], None],
            "struct": [{"x": 1, "y": "a"}, None, {"x": None, "y": "c"}],
            "array": pl.Series([[1, 2], [3, 4], None], dtype=pl.Array(pl.Int32, 2)),
            "null": pl.Series([None, None, None], dtype=pl.Null),
            "bin": [b"\x00", None, b"xyz"],
        }
    )
    assert_same_polars(roundtrip(df), df)


def test_empty_frame_without_columns_round_trips(roundtrip) -> None:
    df = pl.DataFrame()
    out = roundtrip(df)
    assert_same_polars(out, df)
    assert out.shape == (0, 0)


def test_frame_with_zero_rows_keeps_its_schema(roundtrip) -> None:
    df = pl.DataFrame(schema={"a": pl.Int64, "b": pl.String, "c": pl.Categorical, "d": pl.List(pl.Float32)})
    out = roundtrip(df)
    assert_same_polars(out, df)
    assert out.shape == (0, 4)


def test_large_frame_round_trips(roundtrip) -> None:
    n = 600_000
    df = pl.DataFrame({"i": pl.int_range(n, eager=True), "s": pl.Series(["abc", "de"] * (n // 2))})
    df = df.with_columns((pl.col("i") * 0.5).alias("f"))
    assert_same_polars(roundtrip(df), df)


def test_object_column_is_refused_at_push(engine: Engine, store_root: Path) -> None:
    class Thing:
        pass

    df = pl.DataFrame({"ok": [1], "things": pl.Series([Thing()], dtype=pl.Object)})
    with pytest.raises(UnsupportedTypeError, match="things") as info:
        engine.serialize(df, COORDINATE)
    assert info.value.type_name == "polars.DataFrame"
    assert not list(store_root.rglob("*.xcs"))


def test_frame_is_stored_even_when_far_below_threshold(store_root: Path) -> None:
    engine = Engine(StashConfig(store_url=f"file://{store_root}", threshold=1 << 30))
    df = pl.DataFrame({"a": [1]})
    stored = engine.serialize(df, COORDINATE)
    assert is_reference(stored)
    assert stored["codec"] == "polars.arrow-ipc"
    assert stored["type"] == "polars.DataFrame"
    assert stored["summary"] == "polars.DataFrame 1 rows x 1 cols"
    assert_same_polars(engine.deserialize(stored), df)
