"""``xcomstash get DAG RUN TASK [KEY]``: an XCom's value read from the store alone, for a
notebook or a debugging shell with no access to Airflow's metadata database."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from xcomstash.commands import _common

DESCRIPTION = """\
Read one XCom's value from the store without its database row: the object its newest link
names (or its per-XCom object), verified frame by frame against its digest, decrypted with this
installation's keysets, then written to a file or described on stdout.

  xcomstash get etl manual__2026-01-01T00:00:00+00:00 load
  xcomstash get etl manual__2026-01-01T00:00:00+00:00 load return_value -o frame.parquet
  xcomstash get etl scheduled__2026-01-02T00:00:00+00:00 shard --map-index 3 -o shard.npy

What is checked without the row: the object's integrity (every frame against the root digest,
that digest against the link it was found by); for an encrypted object, the DAG run its key is
bound to and the XCom its authenticated header names. Not checked: that the row references this
value now (a link of an older try may remain until it is purged), nor the readers a producer
restricted it to (they are kept in the row). Values kept inline in the database are not in the
store: read them with Airflow.

-o: .parquet (DataFrames and Arrow tables), .npy (arrays), .json (anything JSON can hold),
.bin (bytes). Without -o: type, shape or length and a short preview on stdout.

Exit status: 0 read; 1 not found, refused, damaged or not writable in the format asked for.
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = _common.add_command(sub, "get", "read an XCom's value from the store alone (no database)", DESCRIPTION)
    parser.add_argument("dag_id", metavar="DAG")
    parser.add_argument("run_id", metavar="RUN")
    parser.add_argument("task_id", metavar="TASK")
    parser.add_argument("key", metavar="KEY", nargs="?", default="return_value")
    parser.add_argument("--map-index", type=int, default=-1, help="the mapped task instance (default -1: not mapped)")
    parser.add_argument("-o", "--output", type=Path, help="write the value to this file (.parquet, .npy, .json, .bin)")
    _common.add_common_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xcomstash.coordinate import XComCoordinate
    from xcomstash.errors import XComStashError

    coordinate = XComCoordinate(args.dag_id, args.run_id, args.task_id, args.map_index, args.key)
    try:
        store = _common.open_store(args)
        engine = _common.maintenance_engine(store, "get")
        value = engine.get_stored(coordinate)
    except XComStashError as exc:
        return _common.fail(str(exc))
    description = describe(value)
    if args.output is not None:
        try:
            write_value(value, args.output)
        except (TypeError, ValueError, OSError) as exc:
            return _common.fail(f"cannot write {description['type']} to {args.output}: {exc}")
        description["written"] = str(args.output)
    summary = f"get: {coordinate}: {description['type']}" + (f" -> {args.output}" if args.output else "")

    def render() -> None:
        for name, shown in description.items():
            print(f"{name:<8}  {shown}")

    _common.emit(args, {"xcom": coordinate.as_dict(), **description}, render, summary)
    return _common.EXIT_OK


def describe(value: Any) -> dict[str, Any]:
    """Type, size and a short preview: enough to know what came back."""
    kind = f"{type(value).__module__}.{type(value).__qualname__}".removeprefix("builtins.")
    out: dict[str, Any] = {"type": kind}
    shape = getattr(value, "shape", None)
    if shape is not None:
        out["shape"] = list(shape)
    elif hasattr(value, "__len__"):
        out["length"] = len(value)
    dtype = getattr(value, "dtypes", None) if hasattr(value, "columns") else getattr(value, "dtype", None)
    if dtype is not None:
        out["dtype"] = {str(k): str(v) for k, v in dtype.items()} if hasattr(dtype, "items") else str(dtype)
    text = repr(value.head(5)) if hasattr(value, "head") and hasattr(value, "columns") else repr(value)
    out["preview"] = text if len(text) <= 2000 else text[:2000] + " ..."
    return out


def write_value(value: Any, path: Path) -> None:
    """The value in the format its file name asks for."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = value if isinstance(value, pa.Table) else _to_arrow(value)
        pq.write_table(table, path)
    elif suffix == ".npy":
        import numpy as np

        if not isinstance(value, np.ndarray):
            raise TypeError("only arrays are written as .npy")
        np.save(path, value, allow_pickle=False)
    elif suffix == ".json":
        path.write_text(json.dumps(value, indent=2))
    elif suffix == ".bin":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError("only bytes are written as .bin")
        path.write_bytes(bytes(value))
    else:
        raise ValueError(f"unknown output format {suffix or '(none)'!r}: use .parquet, .npy, .json or .bin")


def _to_arrow(value: Any) -> Any:
    import pyarrow as pa

    if hasattr(value, "to_arrow"):  # polars
        return value.to_arrow()
    if hasattr(value, "columns") and hasattr(value, "dtypes"):  # pandas
        return pa.Table.from_pandas(value)
    raise TypeError("only tables (pandas, polars, Arrow) are written as .parquet")
