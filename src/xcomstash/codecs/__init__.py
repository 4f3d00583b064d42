"""Codecs by value family, and the default registry they are registered in.

Add your own type without touching the engine::

    from xcomstash.codecs import Codec, register_codec

    class MyCodec(Codec):
        name = "mycompany.thing"
        type_names = ("mycompany.models.Thing",)
        ...

    register_codec(MyCodec())
"""

from __future__ import annotations

from xcomstash.codecs.arrow import ArrowTableCodec
from xcomstash.codecs.base import Codec
from xcomstash.codecs.bytes import BytesCodec
from xcomstash.codecs.json import JsonCodec, StructureConverter
from xcomstash.codecs.numpy import NumpyArrayCodec, NumpyScalarCodec
from xcomstash.codecs.pandas import PandasDataFrameCodec
from xcomstash.codecs.polars import PolarsDataFrameCodec
from xcomstash.codecs.registry import CodecRegistry

__all__ = [
    "Codec",
    "CodecRegistry",
    "JsonCodec",
    "StructureConverter",
    "default_registry",
    "register_codec",
]

default_registry = CodecRegistry()
for _codec in (
    PandasDataFrameCodec(),
    PolarsDataFrameCodec(),
    ArrowTableCodec(),
    NumpyArrayCodec(),
    NumpyScalarCodec(),
    BytesCodec(),
):
    default_registry.register(_codec)


def register_codec(codec: Codec, *, replace: bool = False) -> None:
    """Register a codec in the default registry used by every engine in this process."""
    default_registry.register(codec, replace=replace)
