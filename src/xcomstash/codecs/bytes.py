"""Raw bytes, stored as they are (Airflow's serde cannot store bytes at all)."""

from __future__ import annotations

from typing import Any, BinaryIO

from xcomstash.codecs.base import Codec


class BytesCodec(Codec):
    name = "bytes"
    type_names = ("builtins.bytes", "builtins.bytearray", "builtins.memoryview")

    def estimate_size(self, value: Any) -> int:
        return memoryview(value).nbytes

    def meta(self, value: Any) -> dict[str, Any]:
        return {"kind": type(value).__name__}

    def encode(self, value: Any, sink: BinaryIO) -> None:
        sink.write(memoryview(value).cast("B"))

    def decode(self, data: memoryview, meta: dict[str, Any]) -> Any:
        kind = meta.get("kind", "bytes")
        if kind == "bytearray":
            return bytearray(data)
        if kind == "memoryview":
            return memoryview(data)
        if kind == "bytes_":  # numpy.bytes_ subclasses bytes, so its MRO finds this codec first
            import numpy as np

            return np.bytes_(bytes(data))
        return bytes(data)

    def summary(self, value: Any) -> str:
        return f"{type(value).__name__} {memoryview(value).nbytes:,} bytes"
