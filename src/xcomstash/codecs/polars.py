"""polars DataFrames through polars' own Arrow IPC stream writer (keeps polars dtypes)."""

from __future__ import annotations

from typing import Any, BinaryIO

from xcomstash.codecs.arrow import table_summary
from xcomstash.codecs.base import Codec


class PolarsDataFrameCodec(Codec):
    name = "polars.arrow-ipc"
    type_names = ("polars.DataFrame", "polars.dataframe.frame.DataFrame")

    def estimate_size(self, value: Any) -> int:
        return int(value.estimated_size())

    def encode(self, value: Any, sink: BinaryIO) -> None:
        value.write_ipc_stream(sink, compression="uncompressed")

    def decode(self, source: BinaryIO, meta: dict[str, Any]) -> Any:
        import polars as pl

        return pl.read_ipc_stream(source)

    def summary(self, value: Any) -> str:
        rows, cols = value.shape
        return table_summary("polars.DataFrame", rows, cols)
