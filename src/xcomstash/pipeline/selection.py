"""Partial reads of stored tables: only some columns, only some rows, only the bytes needed.

Tables are stored in the Arrow IPC file format, whose footer locates every record batch, and
Arrow's reader fetches only the buffers of the requested fields. Underneath, :class:`FramedFile`
presents the object's payload as a random-access file and fetches, verifies (per-frame SHA-256,
covered by the root digest already checked against the reference) and decompresses only the
frames those reads touch. The bytes fetched are counted, so a caller can see what it saved.
"""

from __future__ import annotations

import io
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from xcomstash.errors import DecryptionError, SelectionError
from xcomstash.format.frames import FrameError, frame_offsets, open_frame
from xcomstash.format.container import ObjectLayout

if TYPE_CHECKING:
    from xcomstash.security.crypto.stream import FrameCipher

#: Decoded frames kept while Arrow reads (Arrow reads buffers in order; a few suffice).
CACHED_FRAMES = 8


class FramedFile(io.RawIOBase):
    """The uncompressed payload of one object, as a seekable read-only file.

    ``cipher``: the opened frame cipher of an encrypted object (frames are then decrypted as
    they are read, like a whole read does)."""

    def __init__(self, layout: ObjectLayout, reader: Any, cipher: FrameCipher | None = None) -> None:
        self._frames = layout.frames
        self._reader = reader
        self._cipher = cipher
        offsets = frame_offsets(self._frames, layout.body_offset)
        self._stored_starts = [stored for stored, _ in offsets]
        self._raw_starts = [raw for _, raw in offsets]
        self.size = layout.raw_size
        self._pos = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self.bytes_fetched = 0
        self.frames_fetched = 0
        #: Arrow turns exceptions raised in ``read`` into its own OSError; keep ours to re-raise.
        self.error: FrameError | DecryptionError | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        want = min(view.nbytes, max(0, self.size - self._pos))
        done = 0
        while done < want:
            index = bisect_right(self._raw_starts, self._pos) - 1
            data = self._frame(index)
            start = self._pos - self._raw_starts[index]
            n = min(want - done, len(data) - start)
            view[done : done + n] = data[start : start + n]
            done += n
            self._pos += n
        return done

    def _frame(self, index: int) -> bytes:
        try:
            return self._load(index)
        except (FrameError, DecryptionError) as exc:
            self.error = exc
            raise

    def _load(self, index: int) -> bytes:
        data = self._cache.get(index)
        if data is not None:
            self._cache.move_to_end(index)
            return data
        frame = self._frames[index]
        self.bytes_fetched += frame.stored_len
        self.frames_fetched += 1
        data = open_frame(
            index, frame, self._stored_starts[index], self._reader.read_at,
            cipher=self._cipher, last=index == len(self._frames) - 1,
        )
        self._cache[index] = data
        if len(self._cache) > CACHED_FRAMES:
            self._cache.popitem(last=False)
        return data


@dataclass(frozen=True)
class PartialRead:
    """What a partial read fetched, for callers who want to see the saving."""

    bytes_fetched: int
    frames_fetched: int
    frames_total: int
    object_size: int


def read_arrow_subset(
    source: FramedFile,
    columns: Sequence[str] | None,
    rows: tuple[int, int | None] | None,
    batch_rows: int,
) -> Any:
    """A pyarrow Table holding only ``columns`` (plus pandas index columns) and the rows
    ``[start, stop)``; only the record batches overlapping those rows are read. Every batch
    but the last holds ``batch_rows`` rows (the writer's ``max_chunksize``)."""
    try:
        return _read_arrow_subset(source, columns, rows, batch_rows)
    except OSError:
        if source.error is not None:
            raise source.error from None
        raise


def _read_arrow_subset(
    source: FramedFile,
    columns: Sequence[str] | None,
    rows: tuple[int, int | None] | None,
    batch_rows: int,
) -> Any:
    import pyarrow as pa

    fields = None
    if columns is not None:
        schema = pa.ipc.open_file(pa.PythonFile(source, mode="r")).schema
        names = list(schema.names)
        missing = [c for c in columns if c not in names]
        if missing:
            raise SelectionError(
                f"columns {missing} are not in the stored table (it has {names[:20]})"
            )
        wanted = list(columns) + [
            c for c in _pandas_index_fields(schema) if c in names and c not in columns
        ]
        fields = [names.index(c) for c in wanted]
    options = pa.ipc.IpcReadOptions(included_fields=fields) if fields is not None else None
    reader = pa.ipc.open_file(pa.PythonFile(source, mode="r"), options=options)
    count = reader.num_record_batches
    if rows is None:
        first, last = 0, count
    else:
        start, stop = rows
        first = min(start // batch_rows, count)
        last = count if stop is None else min(count, -(-stop // batch_rows))
    batches = [reader.get_batch(i) for i in range(first, last)]
    table = pa.Table.from_batches(batches, schema=reader.schema)
    if rows is not None:
        start, stop = rows
        skip = start - first * batch_rows
        table = table.slice(skip, None if stop is None else max(0, stop - start))
    return table


def _pandas_index_fields(schema: Any) -> list[str]:
    meta = schema.pandas_metadata or {}
    return [c for c in meta.get("index_columns", []) if isinstance(c, str)]


def rows_of_range_index(spec: list[int], start: int, length: int) -> Any:
    """The slice ``[start, start + length)`` of a stored RangeIndex ``[start, stop, step]``."""
    import pandas as pd

    first, _stop, step = spec
    begin = first + start * step
    return pd.RangeIndex(begin, begin + length * step, step)


def select_in_memory(value: Any, columns: Sequence[str] | None, rows: tuple[int, int | None] | None) -> Any:
    """The same selection on a value already in memory (inline rows, polars, other labels)."""
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    family = kind.split(".", 1)[0]
    if family not in ("pandas", "polars", "pyarrow"):
        raise SelectionError(f"partial reads need a table, the stored value is a {kind}")
    if columns is not None:
        present = list(value.schema.names) if family == "pyarrow" else list(value.columns)
        missing = [c for c in columns if c not in present]
        if missing:
            raise SelectionError(f"columns {missing} are not in the stored {kind}")
        value = value[list(columns)] if family == "pandas" else value.select(list(columns))
    if rows is None:
        return value
    start, stop = rows
    if family == "pandas":
        return value.iloc[start:stop]
    return value.slice(start, None if stop is None else max(0, stop - start))
