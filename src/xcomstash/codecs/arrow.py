"""pyarrow Tables and RecordBatches in the Arrow IPC *file* format: columnar, typed, zero-copy
reads, and random access (a footer locates every record batch), so a reader can fetch only
some columns or some batches of rows (see :mod:`xcomstash.pipeline.selection`)."""

from __future__ import annotations

from typing import Any, BinaryIO

from xcomstash.codecs.base import Codec

#: Rows per record batch: the granularity of row-range reads.
ROWS_PER_BATCH = 1 << 20


def write_ipc(table: Any, sink: BinaryIO) -> None:
    import pyarrow as pa

    with pa.ipc.new_file(sink, table.schema) as writer:
        if isinstance(table, pa.RecordBatch):
            writer.write_batch(table)
        elif table.num_rows == 0:
            # write_table skips empty chunks, and with them the dictionaries (categories)
            writer.write_batch(_empty_batch(table))
        else:
            writer.write_table(table, max_chunksize=ROWS_PER_BATCH)


def read_ipc(data: memoryview) -> Any:
    """Zero-copy: the table's buffers are views into ``data``."""
    import pyarrow as pa

    return pa.ipc.open_file(pa.py_buffer(data)).read_all()


def table_summary(kind: str, num_rows: int, num_cols: int) -> str:
    return f"{kind} {num_rows:,} rows x {num_cols:,} cols"


class ArrowTableCodec(Codec):
    name = "arrow.ipc"
    type_names = ("pyarrow.lib.Table", "pyarrow.lib.RecordBatch")

    def estimate_size(self, value: Any) -> int:
        return int(value.nbytes)

    def meta(self, value: Any) -> dict[str, Any]:
        import pyarrow as pa

        return {
            "kind": "record_batch" if isinstance(value, pa.RecordBatch) else "table",
            "batch_rows": ROWS_PER_BATCH,  # read at call time: tests shrink it
        }

    def encode(self, value: Any, sink: BinaryIO) -> None:
        write_ipc(value, sink)

    def decode(self, data: memoryview, meta: dict[str, Any]) -> Any:
        return self.from_table(read_ipc(data), meta)

    def from_table(self, table: Any, meta: dict[str, Any]) -> Any:
        """The value from a (possibly projected) table: used by full and partial reads."""
        if meta.get("kind") == "record_batch":
            return table.combine_chunks().to_batches()[0] if table.num_rows else _empty_batch(table)
        return table

    def summary(self, value: Any) -> str:
        return table_summary(type(value).__name__, value.num_rows, value.num_columns)


def _empty_batch(table: Any) -> Any:
    """A 0-row batch of a 0-row table that keeps each dictionary column's dictionary."""
    import pyarrow as pa

    columns = [c.chunks[0] if c.num_chunks else pa.array([], type=c.type) for c in table.columns]
    return pa.RecordBatch.from_arrays(columns, schema=table.schema)
