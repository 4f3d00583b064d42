"""Table heads read from an Arrow IPC file's buffers: the same values as slicing the table,
whatever the types the reader can read, and only a bounded part of the file."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from xcomstash.pipeline.head import CELL_BYTES, HeadError, read_table_head


class CountingFile(io.BytesIO):
    """A seekable file that counts the bytes read through it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.size = len(data)
        self.bytes_read = 0

    def read(self, n: int | None = -1) -> bytes:
        data = super().read(n)
        self.bytes_read += len(data)
        return data


def ipc(table: pa.Table, batch_rows: int) -> CountingFile:
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=batch_rows)
    return CountingFile(sink.getvalue())


def typed_table(rows: int) -> pa.Table:
    i = np.arange(rows)
    return pa.table({
        "i8": pa.array(i % 100, pa.int8()),
        "u64": pa.array(i, pa.uint64()),
        "f32": pa.array(np.where(i % 5 == 0, np.nan, i / 3), pa.float32()),
        "f64_nulls": pa.array([None if k % 3 == 0 else k * 0.25 for k in i], pa.float64()),
        "flag": pa.array(i % 2 == 0),
        "flag_nulls": pa.array([None if k % 4 == 1 else k % 3 == 0 for k in i]),
        "text": pa.array([f"value {k} é" for k in i]),
        "text_nulls": pa.array([None if k % 2 else "x" * (k % 7) for k in i]),
        "large": pa.array([f"L{k}" for k in i], pa.large_string()),
        "raw": pa.array([bytes([int(k) % 256]) * 3 for k in i], pa.binary()),
        "ts": pa.array([dt.datetime(2026, 1, 1) + dt.timedelta(minutes=int(k)) for k in i], pa.timestamp("us", tz="UTC")),
        "day": pa.array([dt.date(2026, 1, 1) + dt.timedelta(days=int(k % 300)) for k in i], pa.date32()),
        "money": pa.array([Decimal(int(k)) / 100 for k in i], pa.decimal128(12, 2)),
    })


@pytest.mark.parametrize("rows, batch_rows, wanted", [(1000, 1000, 20), (1000, 7, 20), (5, 1000, 20), (1000, 300, 0)])
def test_head_values_equal_the_first_rows_of_the_table(rows: int, batch_rows: int, wanted: int) -> None:
    table = typed_table(rows)
    head = read_table_head(ipc(table, batch_rows), wanted, batch_rows)
    assert head.num_rows == rows and head.rows_exact == (-(-rows // batch_rows) <= 8)
    expected = table.slice(0, wanted).to_pydict()
    for column in head.columns:
        assert column.values is not None, column
        got, want = column.values, expected[column.name]
        if column.name == "f32":  # NaN != NaN
            assert [g != g if w != w else g == w for g, w in zip(got, want)] == [True] * len(want)
        else:
            assert got == want, column.name
    assert [(c.name, c.type) for c in head.columns] == [(f.name, str(f.type)) for f in table.schema]


def test_nested_and_dictionary_columns_are_listed_but_not_read_and_later_columns_still_are() -> None:
    table = pa.table({
        "a": pa.array([1, 2, 3]),
        "tags": pa.array([[1], [2, 3], []]),
        "nested": pa.array([{"x": 1, "y": "a"}, {"x": 2, "y": "b"}, {"x": 3, "y": "c"}]),
        "kind": pa.array(["p", "q", "p"]).dictionary_encode(),
        "m": pa.array([[("k", 1)], [], [("j", 2)]], pa.map_(pa.string(), pa.int64())),
        "z": pa.array(["last", "one", "here"]),
    })
    head = read_table_head(ipc(table, 10), 20, 10)
    by_name = {c.name: c for c in head.columns}
    assert by_name["a"].values == [1, 2, 3] and by_name["z"].values == ["last", "one", "here"]
    for name in ("tags", "nested", "kind", "m"):
        assert by_name[name].values is None and "not read" in by_name[name].note


def test_a_head_reads_a_bounded_number_of_bytes_whatever_the_table_size() -> None:
    small = ipc(typed_table(2_000), 1 << 20)
    read_table_head(small, 20, 1 << 20)
    big = ipc(typed_table(200_000), 1 << 20)
    head = read_table_head(big, 20, 1 << 20)
    assert head.num_rows == 200_000
    assert big.size > 50 * small.size
    # The footer, the batch's metadata and each column's first 20 values: the same for both.
    assert big.bytes_read < 2 * small.bytes_read + 4096
    assert big.bytes_read < big.size / 100


def test_long_strings_are_cut_and_only_their_start_is_read() -> None:
    huge = "y" * 5_000_000
    f = ipc(pa.table({"s": pa.array(["short", huge, None])}), 10)
    head = read_table_head(f, 20, 10)
    assert head.columns[0].values == ["short", "y" * CELL_BYTES + "…", None]
    assert f.bytes_read < 100_000


def test_pandas_frames_keep_their_column_order_and_row_count_across_many_batches() -> None:
    df = pd.DataFrame({"n": np.arange(100), "s": [str(k) for k in range(100)]})
    f = ipc(pa.Table.from_pandas(df, preserve_index=False), 9)
    head = read_table_head(f, 12, 9)
    assert head.num_rows == 100
    assert head.columns[0].values == list(range(12)) and head.columns[1].values == [str(k) for k in range(12)]


def test_row_count_beyond_eight_batches_comes_from_the_batch_size() -> None:
    f = ipc(pa.table({"n": pa.array(np.arange(95))}), 10)
    head = read_table_head(f, 3, 10)
    assert head.num_rows == 95 and not head.rows_exact


def test_a_file_that_is_not_arrow_ipc_is_a_head_error() -> None:
    with pytest.raises(HeadError, match="not an Arrow IPC file"):
        read_table_head(CountingFile(b"PAR1" + b"\0" * 100), 5, 10)
