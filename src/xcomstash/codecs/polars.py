"""polars DataFrames through polars' own Arrow IPC stream writer (keeps polars dtypes)."""

from __future__ import annotations

from typing import Any, BinaryIO

from xcomstash.codecs.arrow import table_summary
from xcomstash.codecs.base import Codec
from xcomstash.errors import UnsupportedTypeError


class PolarsDataFrameCodec(Codec):
    name = "polars.arrow-ipc"
    type_names = ("polars.DataFrame", "polars.dataframe.frame.DataFrame")

    def estimate_size(self, value: Any) -> int:
        return int(value.estimated_size())

    def encode(self, value: Any, sink: BinaryIO) -> None:
        import polars as pl

        # polars writes Object columns to IPC as the raw bytes of pointers: refuse them.
        objects = [name for name, dtype in value.schema.items() if dtype == pl.Object]
        if objects:
            raise UnsupportedTypeError(
                "polars.DataFrame", f"columns {objects[:5]} have dtype Object (arbitrary Python objects)"
            )
        value.write_ipc_stream(sink, compression="uncompressed")

    def decode(self, data: memoryview, meta: dict[str, Any]) -> Any:
        import io

        import polars as pl

        return pl.read_ipc_stream(io.BytesIO(data))

    def summary(self, value: Any) -> str:
        rows, cols = value.shape
        return table_summary("polars.DataFrame", rows, cols)
