"""pandas DataFrames through Arrow IPC, with pandas' own metadata so index, column names and
dtypes (categorical, timezone-aware, nullable) come back on the installed pandas version.
"""

from __future__ import annotations

import json
import os
from typing import Any, BinaryIO

from xcomstash.codecs import arrow, release
from xcomstash.codecs.arrow import read_ipc, table_summary, write_ipc
from xcomstash.codecs.base import Codec
from xcomstash.errors import UnsupportedTypeError

#: Up to this many cells a table is converted between pandas and Arrow on the calling thread.
#: pyarrow's own heuristic starts a thread pool for any frame of more than 100 rows a column,
#: and starting it costs more CPU than converting a frame of a few MiB (a fan-in of many small
#: frames paid it on every push); larger frames keep pyarrow's threads. Measured with the
#: benchmark's frames (9 columns, about 8 KiB a thousand cells): up to 4 MiB either way costs
#: the same; from 8 MiB threads win (a task's first push of 32 MiB: 108 ms with them, 339 ms
#: on one thread, which also writes the table into one growing buffer first).
SINGLE_THREAD_CELLS = 512 * 1024


def _threads(cells: int) -> bool:
    """Whether converting a table of ``cells`` cells is worth pyarrow's threads."""
    return cells > SINGLE_THREAD_CELLS


class PandasDataFrameCodec(Codec):
    name = "pandas.arrow-ipc"
    type_names = ("pandas.DataFrame", "pandas.core.frame.DataFrame")
    inline_when_small = True

    def estimate_size(self, value: Any) -> int:
        # deep=False: object columns count 8 bytes a cell, an underestimate.
        return int(value.memory_usage(index=True, deep=False).sum())

    def size_at_least(self, value: Any) -> int:
        # Every cell takes at least a byte in memory. memory_usage builds a Series per column
        # (about a millisecond for a few columns): a frame of many cells skips it.
        rows, cols = value.shape
        return rows * cols

    def meta(self, value: Any) -> dict[str, Any]:
        # Arrow field names must be strings and Arrow has no index frequency: keep both here.
        import pandas as pd

        meta: dict[str, Any] = {"batch_rows": arrow.ROWS_PER_BATCH}
        if isinstance(value.index, pd.RangeIndex):
            meta["range_index"] = [value.index.start, value.index.stop, value.index.step]
        freq = getattr(value.index, "freqstr", None)
        if freq:
            meta["index_freq"] = freq
        index_names = list(value.index.names)
        if not all(n is None or isinstance(n, str) for n in index_names):
            meta["index_names"] = _json_labels(index_names, "index names")
        columns = value.columns
        if type(columns).__name__ == "RangeIndex":
            # pd.DataFrame(ndarray): a wide frame's labels would not fit in the object header
            meta["column_range"] = [columns.start, columns.stop, columns.step]
            meta["column_names"] = _json_labels([columns.name], "column index names")
            return meta
        labels = list(columns)
        if all(isinstance(c, str) for c in labels):
            return meta
        meta["columns"] = _json_labels(labels, "column labels")
        meta["column_names"] = _json_labels(list(value.columns.names), "column index names")
        return meta

    def encode(self, value: Any, sink: BinaryIO) -> None:
        import pyarrow as pa

        frame = value
        if not all(isinstance(c, str) for c in value.columns):
            frame = value.copy(deep=False)
            frame.columns = [str(c) for c in value.columns]
        try:
            rows, cols = frame.shape
            small = not _threads(rows * cols)
            table = pa.Table.from_pandas(frame, preserve_index=None, nthreads=1 if small else None)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError) as exc:
            raise UnsupportedTypeError("pandas.DataFrame", f"Arrow cannot encode it: {exc}") from None
        if small:
            # A small table is written to one Arrow buffer and handed over in one write, rather
            # than as a few dozen small writes (one per column buffer) each copied into place.
            buffer = pa.BufferOutputStream()
            write_ipc(table, buffer)
            sink.write(buffer.getvalue())
        else:
            write_ipc(table, sink)  # streamed: a large table is never held twice
            del table
            # Arrow's allocator keeps the memory the conversion freed (the string columns, about
            # a third of the value here) for reuse; a task that goes on after pushing would hold
            # it for nothing. Returning it takes about a millisecond.
            pa.default_memory_pool().release_unused()

    def decode(self, data: memoryview, meta: dict[str, Any]) -> Any:
        return self.from_table(read_ipc(data), meta, payload=data)

    def from_table(self, table: Any, meta: dict[str, Any], payload: memoryview | None = None) -> Any:
        """The DataFrame from a (possibly projected) table: used by full and partial reads.
        ``payload``: the private, writable buffer the table's memory lies in (a full read), which
        its numeric columns may then keep (see :func:`_columns_in_place`)."""
        import pandas as pd

        threads = _threads(table.num_rows * table.num_columns)
        if payload is not None and not payload.readonly:
            table, joined = _join_batches(table, payload, threads)
            frame = _columns_in_place(table.to_pandas(split_blocks=True, use_threads=threads), [payload, *joined])
        else:
            frame = _writable(table.to_pandas(use_threads=threads))
        frame = _restore_object_strings(frame, table.schema.pandas_metadata or {})
        if "column_range" in meta:
            start, stop, step = meta["column_range"]
            frame.columns = pd.RangeIndex(start, stop, step, name=_unlabel(meta["column_names"][0]))
        elif "columns" in meta:
            labels = [_unlabel(c) for c in meta["columns"]]
            names = [_unlabel(n) for n in meta.get("column_names", [None])]
            if len(names) > 1:
                frame.columns = pd.MultiIndex.from_tuples(labels, names=names)
            else:
                frame.columns = pd.Index(labels, name=names[0], tupleize_cols=False)
        if "index_names" in meta:
            frame.index.names = [_unlabel(n) for n in meta["index_names"]]
        # A PeriodIndex also has a freqstr, but its frequency is part of its dtype (no setter).
        if "index_freq" in meta and isinstance(frame.index, (pd.DatetimeIndex, pd.TimedeltaIndex)):
            frame.index.freq = meta["index_freq"]
        return frame

    def summary(self, value: Any) -> str:
        rows, cols = value.shape
        return table_summary("DataFrame", rows, cols)


def _json_labels(labels: list[Any], what: str) -> list[Any]:
    try:
        return json.loads(json.dumps([_label(c) for c in labels]))
    except (TypeError, ValueError):
        raise UnsupportedTypeError(
            "pandas.DataFrame", f"{what} {labels[:5]!r} are not JSON-representable"
        ) from None


def _join_batches(table: Any, payload: memoryview, threads: bool) -> tuple[Any, list[Any]]:
    """``table`` with each numeric column without nulls that spans several record batches
    copied into one new array, and those arrays.

    A frame of more than one record batch (:data:`arrow.ROWS_PER_BATCH` rows) has its columns
    in pieces, and pandas needs each in one array: ``to_pandas`` would concatenate them into
    new memory while the whole payload stays resident (twice the value in memory at the peak).
    Copied here instead, each piece's pages of the payload are given back as soon as it is
    copied (:func:`release.release`), so the payload shrinks as the columns grow. Only pieces
    of these columns are released: every other column keeps its memory in the payload
    (strings, for one, stay Arrow-backed views of it)."""
    import numpy as np
    import pyarrow as pa

    start, end, _ = _span(payload)

    def joinable(column: Any) -> bool:
        kind = column.type
        return (
            column.num_chunks > 1
            and column.null_count == 0
            and (pa.types.is_integer(kind) or pa.types.is_floating(kind))
        )

    def join(column: Any) -> Any:
        joined = np.empty(len(column), dtype=column.type.to_pandas_dtype())
        at = 0
        for chunk in column.chunks:
            piece = chunk.to_numpy(zero_copy_only=True)
            joined[at : at + len(piece)] = piece
            at += len(piece)
            address = piece.ctypes.data
            if start <= address and address + piece.nbytes <= end:
                release.release(address, piece.nbytes)
        return joined

    positions = [i for i, column in enumerate(table.columns) if joinable(column)]
    if not positions:
        return table, []
    columns = [table.column(i) for i in positions]
    if threads and len(columns) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(len(columns), os.cpu_count() or 1)) as pool:
            arrays = list(pool.map(join, columns))
    else:
        arrays = [join(column) for column in columns]
    for position, column, array in zip(positions, columns, arrays):
        table = table.set_column(position, table.schema.field(position), pa.chunked_array([pa.array(array)], column.type))
    return table, arrays


def _columns_in_place(frame: Any, owned: list[Any]) -> Any:
    """Numeric columns stay where they lie in the payload, as writable arrays.

    A full read decodes from a buffer the pull allocated, verified and owns. ``to_pandas`` with
    ``split_blocks`` leaves numeric columns without nulls as zero-copy views of it, but read-only
    ones (Arrow's memory is immutable), so in-place edits of the pulled frame would fail; the
    default ``to_pandas`` copies every column instead (time, and a second copy of the value in
    memory while it runs). Since the memory is ours, the same bytes are viewed writable
    instead: no copy, and the pulled frame is as editable as any other. (The payload stays
    alive while any such column does.) ``owned`` lists that payload and the arrays
    :func:`_join_batches` made, all memory of this pull. Other columns are as ``to_pandas`` made
    them; read-only ones among them (datetimes, categorical codes) are copied, as
    :func:`_writable` does."""
    import pandas as pd

    spans = [_span(buffer) for buffer in owned]
    arrays: dict[int, Any] = {}
    # items(), not iloc[:, i]: iloc's indexer checks cost more than the rest of a small pull.
    for position, (_, column) in enumerate(frame.items()):
        values = column.array
        arrays[position] = _in_place(values, spans)
        if arrays[position] is None:
            arrays[position] = _writable_array(values)
    rebuilt = pd.DataFrame(arrays, index=frame.index, copy=False)
    rebuilt.columns = frame.columns
    rebuilt.attrs = frame.attrs
    return rebuilt


def _span(buffer: Any) -> tuple[int, int, Any]:
    """Where ``buffer``'s memory starts and ends, and a byte array over it."""
    import numpy as np

    base = np.frombuffer(buffer, dtype=np.uint8)
    return base.ctypes.data, base.ctypes.data + base.nbytes, base


def _in_place(values: Any, spans: list[tuple[int, int, Any]]) -> Any:
    """A writable array over the same memory as numeric ``values``, if that memory lies in one
    of ``spans`` (start, end, the array that owns it); else None."""
    import numpy as np
    import pandas as pd

    if not (isinstance(values, pd.arrays.NumpyExtensionArray) and values.dtype.kind in "iuf"):
        return None
    array = values.to_numpy()
    at = array.ctypes.data
    if array.ndim != 1 or not array.flags.c_contiguous:
        return None
    for start, end, base in spans:
        if start <= at and at + array.nbytes <= end:
            return np.ndarray(array.shape, array.dtype, buffer=base, offset=at - start)
    return None


def _writable_array(values: Any) -> Any:
    """``values``, copied if its memory is read-only (a zero-copy view of Arrow memory)."""
    import numpy as np

    # The arrays numpy-backed extension arrays keep (``Categorical.codes`` itself is always a
    # read-only view, whatever its memory).
    backing = getattr(values, "_codes", None)
    if backing is None:
        backing = getattr(values, "_ndarray", None)
    if not isinstance(backing, np.ndarray):
        return values  # Arrow-backed and masked arrays: pandas replaces their memory on edit
    return values if backing.flags.writeable else values.copy()


def _writable(frame: Any) -> Any:
    """``frame`` with every column whose memory is read-only copied (categorical codes are
    zero-copy views of Arrow's dictionary indices even without ``split_blocks``), so that the
    pulled frame can be edited in place like any other."""
    for position, (_, column) in enumerate(frame.items()):
        values = column.array
        copied = _writable_array(values)
        if copied is not values:
            frame.isetitem(position, copied)
    return frame


def _restore_object_strings(frame: Any, pandas_meta: dict[str, Any]) -> Any:
    """pandas >= 3 reads every Arrow string column as its ``str`` dtype: give the columns and
    index levels that had object dtype on the producer that dtype back, with None for missing."""
    import pandas as pd

    fields = {
        c.get("field_name", c.get("name"))
        for c in pandas_meta.get("columns", [])
        if c.get("numpy_type") == "object"
    }
    if not fields:
        return frame

    def as_object(values: Any) -> Any:
        if not isinstance(values.dtype, pd.StringDtype):
            return values
        if isinstance(values, pd.Index):
            return pd.Index([None if pd.isna(v) else v for v in values], dtype=object, name=values.name)
        return values.astype(object).where(values.notna(), None)

    for position, label in enumerate(frame.columns):
        if isinstance(label, str) and label in fields:
            frame.isetitem(position, as_object(frame.iloc[:, position]))
    index_fields = pandas_meta.get("index_columns") or []
    if len(index_fields) == frame.index.nlevels and any(
        isinstance(f, str) and f in fields for f in index_fields
    ):
        levels = [
            as_object(frame.index.get_level_values(i))
            if isinstance(f, str) and f in fields
            else frame.index.get_level_values(i)
            for i, f in enumerate(index_fields)
        ]
        frame.index = pd.MultiIndex.from_arrays(levels) if len(levels) > 1 else levels[0]
    return frame


def _label(label: Any) -> Any:
    if isinstance(label, tuple):
        return {"tuple": [_label(x) for x in label]}
    if isinstance(label, (str, int, float, bool)) or label is None:
        return label
    raise TypeError(label)


def _unlabel(label: Any) -> Any:
    if isinstance(label, dict):
        return tuple(_unlabel(x) for x in label["tuple"])
    return label
