"""The first rows of a stored table, reading a bounded number of bytes whatever its size.

A partial read (:mod:`xcomstash.pipeline.selection`) fetches whole record batches, and a
batch holds up to a million rows: the first 20 rows of a large table would still cost the
whole first batch. A preview wants less. The Arrow IPC file format says where every buffer of
a batch lies (the batch's metadata: one node per field, one offset and length per buffer), and
a column of a fixed-width or string type keeps row ``i`` at a computable place in its buffers.
So this module reads the file's footer (the schema and where each batch starts), the first
batch's metadata, and for each column only the prefix of its buffers that holds the first
rows. Through :class:`~xcomstash.pipeline.selection.FramedFile` only the frames holding those
bytes are fetched and verified.

Columns of other types (nested, dictionary-encoded, views) are listed in the schema but their
values are not read (``note`` says why). The metadata is parsed here with a small FlatBuffers
reader: pyarrow does not expose buffer locations, and the format is stable (Arrow columnar
format 1.0, MetadataVersion V5).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any



_MAGIC = b"ARROW1"


class HeadError(Exception):
    """The file is not what the head reader expects (internal; the pull path raises
    :class:`~xcomstash.errors.DecodeError` naming the value)."""


#: ``MessageHeader`` union tags (Message.fbs).
_RECORD_BATCH = 3
#: At most this many bytes of one string or binary cell are read.
CELL_BYTES = 1024
#: Columns whose values are read (the others are listed, not read): bounds the bytes read.
MAX_COLUMNS = 64
#: Batches whose metadata is read to count rows exactly (beyond: counted from the batch size).
EXACT_COUNT_BATCHES = 8


@dataclass(frozen=True)
class HeadColumn:
    name: str
    type: str
    nullable: bool
    #: The first rows' values (Python objects), or None when not read (see ``note``).
    values: list[Any] | None
    note: str = ""


@dataclass(frozen=True)
class TableHead:
    schema: Any  # pyarrow.Schema
    columns: list[HeadColumn]
    num_rows: int
    #: False when the row count was computed from the batch size rather than counted.
    rows_exact: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class _FB:
    """One FlatBuffers table in ``buf`` at ``pos`` (just what Arrow's metadata needs)."""

    __slots__ = ("buf", "pos", "vtable", "vlen")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vlen = struct.unpack_from("<H", buf, self.vtable)[0]

    @classmethod
    def root(cls, buf: bytes) -> _FB:
        return cls(buf, struct.unpack_from("<I", buf, 0)[0])

    def _offset(self, index: int) -> int:
        slot = 4 + 2 * index
        return struct.unpack_from("<H", self.buf, self.vtable + slot)[0] if slot < self.vlen else 0

    def scalar(self, index: int, fmt: str, default: int = 0) -> int:
        off = self._offset(index)
        return struct.unpack_from(fmt, self.buf, self.pos + off)[0] if off else default

    def table(self, index: int) -> _FB | None:
        off = self._offset(index)
        if not off:
            return None
        at = self.pos + off
        return _FB(self.buf, at + struct.unpack_from("<I", self.buf, at)[0])

    def structs(self, index: int, fmt: str) -> list[tuple[int, ...]]:
        """A vector of structs, each unpacked with ``fmt``."""
        off = self._offset(index)
        if not off:
            return []
        at = self.pos + off
        start = at + struct.unpack_from("<I", self.buf, at)[0]
        count = struct.unpack_from("<I", self.buf, start)[0]
        size = struct.calcsize(fmt)
        return [struct.unpack_from(fmt, self.buf, start + 4 + i * size) for i in range(count)]


_BLOCK = "<qi4xq"  # offset, metaDataLength, (padding), bodyLength
_NODE = "<qq"  # length, null_count
_BUFFER = "<qq"  # offset, length


def _read(source: Any, offset: int, length: int) -> bytes:
    source.seek(offset)
    data = source.read(length)
    if len(data) != length:
        raise HeadError(f"the stored table ends early (wanted {length} bytes at {offset})")
    return bytes(data)


def _footer(source: Any) -> _FB:
    size = source.size
    tail = _read(source, size - 10, 10)
    if tail[4:] != _MAGIC:
        raise HeadError("the stored table is not an Arrow IPC file")
    length = struct.unpack_from("<i", tail, 0)[0]
    if not 0 < length < size:
        raise HeadError("the stored table has a malformed footer")
    return _FB.root(_read(source, size - 10 - length, length))


def _batch_meta(source: Any, block: tuple[int, ...]) -> tuple[_FB, int]:
    """The RecordBatch table of the batch at ``block``, and where its body starts."""
    offset, meta_length, _body = block
    head = _read(source, offset, meta_length)
    first = struct.unpack_from("<i", head, 0)[0]
    start = 8 if first == -1 else 4
    message = _FB.root(head[start:])
    if message.scalar(1, "<B") != _RECORD_BATCH:
        raise HeadError("the stored table's batch block does not hold a record batch")
    batch = message.table(2)
    if batch is None:
        raise HeadError("the stored table's record batch has no metadata")
    return batch, offset + meta_length


def _layout(t: Any) -> tuple[int, int]:
    """(nodes, buffers) a field of type ``t`` takes in a record batch; ValueError if this
    reader does not know (the columns from there on are then not read)."""
    import pyarrow as pa

    types = pa.types
    if types.is_null(t):
        return 1, 0
    if types.is_dictionary(t):
        return 1, 2
    if types.is_binary_view(t) or types.is_string_view(t):
        raise ValueError("view types have a variable number of buffers")
    if types.is_binary(t) or types.is_string(t) or types.is_large_binary(t) or types.is_large_string(t):
        return 1, 3
    if types.is_map(t):
        key, item = _layout(t.key_type), _layout(t.item_type)
        return 2 + key[0] + item[0], 3 + key[1] + item[1]
    if types.is_list(t) or types.is_large_list(t):
        child = _layout(t.value_type)
        return 1 + child[0], 2 + child[1]
    if types.is_fixed_size_list(t):
        child = _layout(t.value_type)
        return 1 + child[0], 1 + child[1]
    if types.is_struct(t):
        nodes, buffers = 1, 1
        for i in range(t.num_fields):
            child = _layout(t.field(i).type)
            nodes, buffers = nodes + child[0], buffers + child[1]
        return nodes, buffers
    try:
        t.bit_width
    except ValueError:
        raise ValueError(f"type {t} is not a fixed-width type this reader knows") from None
    return 1, 2


def _kind(t: Any) -> str | None:
    """``fixed``, ``bool``, ``string``, ``binary`` (and ``large_*``), or None (not read)."""
    import pyarrow as pa

    types = pa.types
    if types.is_dictionary(t):
        return None
    if types.is_boolean(t):
        return "bool"
    if types.is_string(t) or types.is_large_string(t):
        return "string"
    if types.is_binary(t) or types.is_large_binary(t):
        return "binary"
    if types.is_null(t) or types.is_nested(t):
        return None
    try:
        return "fixed" if t.bit_width % 8 == 0 else None
    except ValueError:
        return None


def _bits(data: bytes, n: int) -> list[bool]:
    return [bool(data[i >> 3] >> (i & 7) & 1) for i in range(n)]


def _column(
    source: Any, body: int, t: Any, kind: str, node: tuple[int, ...], buffers: list[tuple[int, ...]], rows: int
) -> list[Any]:
    import pyarrow as pa

    n = min(rows, node[0])
    if n <= 0:
        return []
    validity_offset, validity_length = buffers[0]
    valid = _bits(_read(source, body + validity_offset, -(-n // 8)), n) if validity_length and node[1] else [True] * n
    if kind in ("fixed", "bool"):
        width = -(-n // 8) if kind == "bool" else n * (t.bit_width // 8)
        data_offset, _ = buffers[1]
        data = _read(source, body + data_offset, width)
        validity = None
        if not all(valid):
            packed = bytearray(-(-n // 8))
            for i, ok in enumerate(valid):
                if ok:
                    packed[i >> 3] |= 1 << (i & 7)
            validity = pa.py_buffer(bytes(packed))
        return pa.Array.from_buffers(t, n, [validity, pa.py_buffer(data)]).to_pylist()
    large = pa.types.is_large_string(t) or pa.types.is_large_binary(t)
    width = 8 if large else 4
    offsets_at, _ = buffers[1]
    raw = _read(source, body + offsets_at, (n + 1) * width)
    offsets = struct.unpack_from(f"<{n + 1}{'q' if large else 'i'}", raw)
    data_at, _ = buffers[2]
    values: list[Any] = []
    span_end = min(offsets[n], offsets[0] + rows * CELL_BYTES)
    block = _read(source, body + data_at + offsets[0], max(0, span_end - offsets[0]))
    for i in range(n):
        if not valid[i]:
            values.append(None)
            continue
        start, stop = offsets[i] - offsets[0], offsets[i + 1] - offsets[0]
        cut = min(stop, start + CELL_BYTES)
        if cut <= len(block):
            cell = block[start:cut]
        else:  # beyond the shared read: this cell alone, capped
            cell = _read(source, body + data_at + offsets[i], cut - start)
        if kind == "string":
            text = cell.decode("utf-8", "replace")
            values.append(text + "…" if cut < stop else text)
        else:
            values.append(bytes(cell) + (b"..." if cut < stop else b""))
    return values


def read_table_head(source: Any, rows: int, batch_rows: int) -> TableHead:
    """The schema, the row count and the first ``rows`` rows of each column of the Arrow IPC
    file ``source`` (a seekable file, a :class:`FramedFile`), reading only: the footer, the
    first and last batches' metadata, and each column's first ``rows`` values."""
    import pyarrow as pa

    footer = _footer(source)
    blocks = footer.structs(3, _BLOCK)
    schema = pa.ipc.open_file(pa.PythonFile(source, mode="r")).schema
    if not blocks:
        return TableHead(schema, [HeadColumn(f.name, str(f.type), f.nullable, []) for f in schema], 0)
    first, _ = _batch_meta(source, blocks[0])
    if first.table(3) is not None:  # BodyCompression: buffers are compressed one by one
        raise HeadError("the stored table uses Arrow buffer compression, which previews do not read")
    if len(blocks) <= EXACT_COUNT_BATCHES:
        counts = [_batch_meta(source, b)[0].scalar(0, "<q") for b in blocks]
        num_rows, exact = sum(counts), True
    else:
        last = _batch_meta(source, blocks[-1])[0].scalar(0, "<q")
        num_rows, exact = (len(blocks) - 1) * batch_rows + last, False
    plan: list[tuple[str, int, int, str | None]] = []  # note, node index, buffer index, kind
    node_at = buffer_at = 0
    known = True
    for index, f in enumerate(schema):
        if not known:
            plan.append(("not read (after a column of a type previews do not read)", 0, 0, None))
            continue
        try:
            n_nodes, n_buffers = _layout(f.type)
        except ValueError as exc:
            known = False
            plan.append((f"not read ({exc})", 0, 0, None))
            continue
        kind = _kind(f.type)
        note = ""
        if kind is None:
            note = "not read (nested or dictionary-encoded)"
        elif index >= MAX_COLUMNS:
            note, kind = f"not read (only the first {MAX_COLUMNS} columns are)", None
        plan.append((note, node_at, buffer_at, kind))
        node_at += n_nodes
        buffer_at += n_buffers
    values: list[list[Any]] = [[] for _ in schema]
    have = 0
    for block in blocks:  # usually the first batch holds them all
        if have >= rows:
            break
        batch, body = _batch_meta(source, block)
        nodes = batch.structs(1, _NODE)
        buffers = batch.structs(2, _BUFFER)
        length = batch.scalar(0, "<q")
        for i, (f, (_, node, buffer, kind)) in enumerate(zip(schema, plan)):
            if kind is not None:
                n_buffers = _layout(f.type)[1]
                values[i].extend(
                    _column(source, body, f.type, kind, nodes[node], buffers[buffer : buffer + n_buffers], rows - have)
                )
        have += min(length, rows - have)
    columns = [
        HeadColumn(f.name, str(f.type), f.nullable, values[i] if kind is not None else None, note)
        for i, (f, (note, _, _, kind)) in enumerate(zip(schema, plan))
    ]
    return TableHead(schema, columns, num_rows, exact)
