"""pandas DataFrames through Arrow IPC, with pandas' own metadata so index, column names and
dtypes (categorical, timezone-aware, nullable) come back on the installed pandas version.
"""

from __future__ import annotations

import json
from typing import Any, BinaryIO

from xcomstash.codecs.arrow import read_ipc, table_summary, write_ipc
from xcomstash.codecs.base import Codec
from xcomstash.errors import UnsupportedTypeError


class PandasDataFrameCodec(Codec):
    name = "pandas.arrow-ipc"
    type_names = ("pandas.DataFrame", "pandas.core.frame.DataFrame")
    inline_when_small = True

    def estimate_size(self, value: Any) -> int:
        # deep=False: cheap; object columns count 8 bytes a cell, an underestimate.
        return int(value.memory_usage(index=True, deep=False).sum())

    def meta(self, value: Any) -> dict[str, Any]:
        # Arrow field names must be strings and Arrow has no index frequency: keep both here.
        meta: dict[str, Any] = {}
        freq = getattr(value.index, "freqstr", None)
        if freq:
            meta["index_freq"] = freq
        labels = list(value.columns)
        if all(isinstance(c, str) for c in labels):
            return meta
        try:
            meta["columns"] = json.loads(json.dumps([_label(c) for c in labels]))
        except (TypeError, ValueError):
            raise UnsupportedTypeError(
                "pandas.DataFrame", f"column labels {labels[:5]!r} are not JSON-representable"
            ) from None
        return meta

    def encode(self, value: Any, sink: BinaryIO) -> None:
        import pyarrow as pa

        frame = value
        if not all(isinstance(c, str) for c in value.columns):
            frame = value.copy(deep=False)
            frame.columns = [str(c) for c in value.columns]
        try:
            table = pa.Table.from_pandas(frame, preserve_index=None)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise UnsupportedTypeError("pandas.DataFrame", f"Arrow cannot encode it: {exc}") from None
        write_ipc(table, sink)

    def decode(self, source: BinaryIO, meta: dict[str, Any]) -> Any:
        frame = read_ipc(source).to_pandas()
        if "columns" in meta:
            frame.columns = [_unlabel(c) for c in meta["columns"]]
        if "index_freq" in meta:
            frame.index.freq = meta["index_freq"]
        return frame

    def summary(self, value: Any) -> str:
        rows, cols = value.shape
        return table_summary("DataFrame", rows, cols)


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
