"""Previews of XCom values for people: what the Airflow UI tab shows of a value.

A preview is small whatever the value's size: a table's schema, row count and first rows; an
array's shape, dtype, memory order and a few statistics; JSON pretty-printed and cut at a size
limit; bytes as a hex head. Every string that reaches a preview goes through the
sensitive-data scanner's masking first (see :func:`masker_for`).

This module builds previews from values (or from a table head read by
:mod:`xcomstash.pipeline.head`); it reads nothing. Reading goes through the engine's pull path
(:meth:`xcomstash.engine.Engine.preview`), with every check a task's pull makes.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from xcomstash.pipeline.head import TableHead
    from xcomstash.security.sensitive import Scanner

#: Replaces whatever the masking found (the scanner's own marker).
MASK = "***"

#: Masks a JSON-like structure: returns the masked copy.
Masker = Callable[[Any], Any]


@dataclass(frozen=True)
class PreviewLimits:
    """How much of a value a preview shows, and how much may be read to build it."""

    #: First rows of a table.
    rows: int = 20
    #: Characters of pretty-printed JSON.
    json_chars: int = 20_000
    #: Bytes of a bytes value shown as hex.
    hex_bytes: int = 512
    #: Characters of one table cell.
    cell_chars: int = 200
    #: Values that cannot be read in part (JSON, arrays, polars) are read whole only up to
    #: this stored size; larger ones show what their header says.
    whole_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("rows", "json_chars", "hex_bytes", "cell_chars", "whole_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"PreviewLimits.{name} must not be negative")


@dataclass(frozen=True)
class Preview:
    """What the tab shows of one value. ``kind``: table, array, json, bytes, or none (the
    value is not shown; ``note`` says why)."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.data, **({"note": self.note} if self.note else {})}


@dataclass(frozen=True)
class StoredInfo:
    """Where a value lives and what it costs there."""

    location: str  # inline | store
    uri: str = ""
    #: The value's size in the row (inline JSON) or the stored object's size.
    size: int = 0
    codec: str = ""
    python_type: str = ""
    summary: str = ""
    #: Stored objects only: the payload before and after compression, how it is compressed
    #: and whether (under which key) it is encrypted.
    raw_bytes: int | None = None
    body_bytes: int | None = None
    compression: str = ""
    encrypted: bool = False
    key_id: str = ""
    frames: int | None = None
    #: Who may read it (the reference's ``readers``), when restricted.
    readers: dict[str, Any] | None = None

    @property
    def ratio(self) -> float | None:
        if not self.raw_bytes or not self.body_bytes:
            return None
        return round(self.raw_bytes / self.body_bytes, 2)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")} | {"ratio": self.ratio}


@dataclass(frozen=True)
class PreviewResult:
    stored: StoredInfo
    preview: Preview
    #: What was read to build it: bytes and frames fetched, frames in the object.
    read: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"stored": self.stored.to_json(), "preview": self.preview.to_json(), "read": dict(self.read)}


def masker_for(scanner: Scanner | None) -> Masker:
    """Masking with the deployment's sensitive-data detectors (registered Airflow secrets,
    secret-looking strings, values of sensitive field names). Previews always mask, whatever
    the DAG's push policy: a preview is a display, and a value pushed under ``warn`` or
    ``off`` may still hold what a viewer should not see."""
    if scanner is None:
        return lambda structure: structure

    def mask(structure: Any) -> Any:
        return scanner.mask_structure(structure)[0]

    return mask


# ------------------------------------------------------------------------------ cells


def cell(value: Any, limit: int) -> Any:
    """One table cell as JSON: numbers and booleans as they are, NaN/inf as strings, times in
    ISO 8601, bytes as hex, anything else as its text, cut at ``limit`` characters."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value).replace("nan", "NaN")
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value[: limit // 2]).hex()
        return text + ("…" if len(value) > limit // 2 else "")
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return cell(value.item(), limit)
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ----------------------------------------------------------------------------- tables


def table_from_head(head: TableHead, limits: PreviewLimits, mask: Masker) -> Preview:
    """The preview of a table whose head was read from storage (no whole read)."""
    pandas_types = _pandas_dtypes(head.schema)
    index_names = _pandas_index_names(head.schema)
    columns = []
    for c in head.columns:
        entry: dict[str, Any] = {"name": index_names.get(c.name, c.name), "type": c.type, "nullable": c.nullable}
        if c.name in index_names:
            entry["index"] = True
        if c.name in pandas_types:
            entry["dtype"] = pandas_types[c.name]
        if c.note:
            entry["note"] = c.note
        columns.append(entry)
    count = max([len(c.values) for c in head.columns if c.values is not None], default=0)
    rows = [
        [cell(c.values[i], limits.cell_chars) if c.values is not None and i < len(c.values) else None for c in head.columns]
        for i in range(min(count, limits.rows))
    ]
    return _table(columns, rows, head.num_rows, head.rows_exact, mask)


def table_from_value(value: Any, limits: PreviewLimits, mask: Masker) -> Preview:
    """The preview of a table already in memory (an inline DataFrame, a polars frame read
    whole): pandas, polars or pyarrow."""
    import pyarrow as pa

    family = type(value).__module__.split(".", 1)[0]
    num_rows = int(value.num_rows if family == "pyarrow" else len(value))
    head = value.head(limits.rows) if family != "pyarrow" else value.slice(0, limits.rows)
    if family == "pandas":
        frame = head.copy(deep=False)
        frame.columns = [str(c) for c in frame.columns]
        table = pa.Table.from_pandas(frame, preserve_index=False)
        dtypes = {str(k): str(v) for k, v in value.dtypes.items()}
    elif family == "polars":
        table = head.to_arrow()
        dtypes = {name: str(t) for name, t in value.schema.items()}
    else:
        table = head if isinstance(head, pa.Table) else pa.Table.from_batches([head])
        dtypes = {}
    columns = []
    for f in table.schema:
        entry: dict[str, Any] = {"name": f.name, "type": str(f.type), "nullable": f.nullable}
        if f.name in dtypes:
            entry["dtype"] = dtypes[f.name]
        columns.append(entry)
    data = table.to_pydict()
    rows = [[cell(data[f.name][i], limits.cell_chars) for f in table.schema] for i in range(table.num_rows)]
    return _table(columns, rows, num_rows, True, mask)


def _table(columns: list[dict[str, Any]], rows: list[list[Any]], num_rows: int, exact: bool, mask: Masker) -> Preview:
    names = [c["name"] for c in columns]
    # Masked as records, so a sensitive column name (``password``) masks its cells too.
    records = mask([dict(zip(names, row)) for row in rows]) if rows else []
    rows = [[record.get(name) for name in names] for record in records]
    data = {"columns": columns, "rows": rows, "num_rows": num_rows, "shown_rows": len(rows)}
    if not exact:
        data["num_rows_estimated"] = True
    return Preview("table", data)


def _pandas_index_names(schema: Any) -> dict[str, str]:
    """Stored pandas index columns (``__index_level_0__``) by the name a person knows them by."""
    meta = schema.pandas_metadata or {}
    out = {}
    for column in meta.get("columns", []):
        field = column.get("field_name")
        if isinstance(field, str) and field in meta.get("index_columns", []):
            out[field] = f"({column.get('name') or 'index'})"
    return out


def _pandas_dtypes(schema: Any) -> dict[str, str]:
    meta = schema.pandas_metadata or {}
    out = {}
    for column in meta.get("columns", []):
        name, dtype = column.get("field_name") or column.get("name"), column.get("pandas_type")
        numpy_type = column.get("numpy_type")
        if isinstance(name, str) and isinstance(numpy_type, str):
            out[name] = numpy_type if numpy_type != "object" or dtype is None else str(dtype)
            timezone = (column.get("metadata") or {}).get("timezone")
            if timezone and numpy_type.startswith("datetime64[") and numpy_type.endswith("]"):
                out[name] = f"{numpy_type[:-1]}, {timezone}]"  # as pandas names it
    return out


# ----------------------------------------------------------------------------- arrays


def array_preview(array: Any) -> Preview:
    """Shape, dtype, memory order and, for numbers, min / max / mean / NaN count."""
    import numpy as np

    data: dict[str, Any] = {
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "order": "F" if array.ndim > 1 and array.flags.f_contiguous and not array.flags.c_contiguous else "C",
        "nbytes": int(array.nbytes),
    }
    if array.size and (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        values = array.astype(np.float64, copy=False) if array.dtype == np.bool_ else array
        if np.issubdtype(values.dtype, np.complexfloating):
            data["summary"] = {"nan": int(np.isnan(values).sum())}
        else:
            nan = int(np.isnan(values).sum()) if np.issubdtype(values.dtype, np.floating) else 0
            finite = values[~np.isnan(values)] if nan else values
            summary: dict[str, Any] = {"nan": nan}
            if finite.size:
                summary |= {
                    "min": cell(finite.min().item(), 64),
                    "max": cell(finite.max().item(), 64),
                    "mean": cell(float(finite.mean(dtype=np.float64)), 64),
                }
            data["summary"] = summary
    return Preview("array", data)


def array_header_preview(shape: Sequence[int], dtype: str, fortran: bool, note: str) -> Preview:
    """An array too large to read whole: what its header says, no statistics."""
    return Preview(
        "array", {"shape": list(shape), "dtype": dtype, "order": "F" if fortran else "C"}, note=note
    )


# ------------------------------------------------------------------------- JSON, bytes


def json_preview(value: Any, limits: PreviewLimits, mask: Masker) -> Preview:
    """Pretty-printed JSON (masked), cut at ``json_chars``."""
    text = json.dumps(mask(_jsonable(value)), indent=2, ensure_ascii=False, default=str)
    data: dict[str, Any] = {"chars": len(text)}
    if len(text) > limits.json_chars:
        data["text"] = text[: limits.json_chars]
        data["truncated"] = True
        return Preview("json", data, note=f"cut at {limits.json_chars:,} of {len(text):,} characters")
    data["text"] = text
    return Preview("json", data)


def _jsonable(value: Any) -> Any:
    """Tuples, sets and other containers as lists; what JSON cannot say as text."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return cell(value, 10_000)


def bytes_preview(head: bytes, total: int, limits: PreviewLimits, scanner: Scanner | None) -> Preview:
    """A hex dump of the first bytes. Bytes cannot be masked: if the scanner finds something
    secret-looking in them, the dump is withheld."""
    head = bytes(head[: limits.hex_bytes])
    data: dict[str, Any] = {"length": total, "shown": len(head)}
    if scanner is not None:
        findings = scanner.scan_bytes(head)
        if findings:
            data["shown"] = 0
            data["hex"] = ""
            return Preview("bytes", data, note=f"{MASK} not shown: the first bytes look like they hold secrets")
    data["hex"] = hexdump(head)
    data["base64"] = base64.b64encode(head[:64]).decode()
    return Preview("bytes", data)


def hexdump(data: bytes, width: int = 16) -> str:
    lines = []
    for at in range(0, len(data), width):
        chunk = data[at : at + width]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{at:08x}  {chunk.hex(' '):<{width * 3 - 1}}  |{text}|")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- dispatch


def value_preview(value: Any, limits: PreviewLimits, scanner: Scanner | None) -> Preview:
    """The preview of a value in memory, by what it is."""
    mask = masker_for(scanner)
    family = type(value).__module__.split(".", 1)[0]
    name = type(value).__name__
    if family in ("pandas", "polars") and name == "DataFrame" or family == "pyarrow" and name in ("Table", "RecordBatch"):
        return table_from_value(value, limits, mask)
    if family == "numpy" and name == "ndarray":
        return array_preview(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(memoryview(value)[: limits.hex_bytes])
        return bytes_preview(data, memoryview(value).nbytes, limits, scanner)
    return json_preview(value, limits, mask)
