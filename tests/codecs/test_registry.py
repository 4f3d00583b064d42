"""The codec registry: a user codec round-trips a custom type without engine changes, clashing
registrations are refused, unsupported types fail at push time, and an object whose codec is
not registered where it is read fails with a typed error."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pytest

from tests.codecs.conftest import COORDINATE
from xcomstash import (
    ConfigError,
    DecodeError,
    Engine,
    StashConfig,
    UnsupportedTypeError,
    XComStashError,
)
from xcomstash.codecs import Codec, CodecRegistry, default_registry


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str = ""


class LabelledPoint(Point):
    pass


class Unregistered:
    pass


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class PointCodec(Codec):
    name = "tests.point"
    type_names = (qualified(Point),)

    def estimate_size(self, value: Any) -> int:
        return 16 + len(value.label)

    def meta(self, value: Any) -> dict[str, Any]:
        return {"class": type(value).__name__}

    def encode(self, value: Any, sink: BinaryIO) -> None:
        sink.write(json.dumps([value.x, value.y, value.label]).encode())

    def decode(self, data: memoryview, meta: dict[str, Any]) -> Any:
        cls = {"Point": Point, "LabelledPoint": LabelledPoint}[meta["class"]]
        return cls(*json.loads(bytes(data)))

    def summary(self, value: Any) -> str:
        return f"Point ({value.x}, {value.y})"


class BrokenDecodeCodec(PointCodec):
    name = "tests.broken-decode"

    def decode(self, data: memoryview, meta: dict[str, Any]) -> Any:
        raise ValueError("this codec cannot read anything")


class FailingEncodeCodec(PointCodec):
    name = "tests.failing-encode"

    def encode(self, value: Any, sink: BinaryIO) -> None:
        sink.write(b"partial")
        raise RuntimeError("encoder exploded half way")


def engine_with(store_root: Path, *codecs: Codec, **config: Any) -> Engine:
    registry = CodecRegistry()
    for codec in codecs:
        registry.register(codec)
    return Engine(StashConfig(store_url=f"file://{store_root}", **{"threshold": 0, **config}), registry=registry)


def test_user_codec_round_trips_a_custom_type_without_engine_changes(store_root: Path) -> None:
    engine = engine_with(store_root, PointCodec())
    point = Point(1.5, -2.0, "ü")
    stored = engine.serialize(point, COORDINATE)
    assert stored["codec"] == "tests.point"
    assert stored["summary"] == "Point (1.5, -2.0)"
    assert stored["type"] == "tests.Point"
    out = engine.deserialize(json.loads(json.dumps(stored)))
    assert type(out) is Point
    assert out == point


def test_user_codec_handles_subclasses_through_the_mro(store_root: Path) -> None:
    engine = engine_with(store_root, PointCodec())
    point = LabelledPoint(3.0, 4.0, "sub")
    out = engine.deserialize(engine.serialize(point, COORDINATE))
    assert type(out) is LabelledPoint
    assert out == point


def test_user_codec_value_is_stored_even_below_threshold(store_root: Path) -> None:
    # inline_when_small is False by default: the converter never sees the custom type.
    engine = engine_with(store_root, PointCodec(), threshold=1 << 30)
    stored = engine.serialize(Point(1, 2), COORDINATE)
    assert stored["codec"] == "tests.point"
    assert engine.deserialize(stored) == Point(1, 2)


def test_fresh_registry_is_independent_of_the_default_one() -> None:
    registry = CodecRegistry()
    registry.register(PointCodec())
    assert registry.names() == ["tests.point"]
    assert registry.for_value(Point(0, 0)).name == "tests.point"
    assert default_registry.for_value(Point(0, 0)) is None
    assert "tests.point" not in default_registry.names()


def test_registering_the_same_codec_name_twice_is_refused() -> None:
    registry = CodecRegistry()
    registry.register(PointCodec())

    class SameName(PointCodec):
        type_names = (qualified(Unregistered),)

    with pytest.raises(ConfigError, match="tests.point"):
        registry.register(SameName())


def test_registering_a_second_codec_for_a_claimed_type_is_refused_unless_replacing(
    store_root: Path,
) -> None:
    registry = CodecRegistry()
    registry.register(PointCodec())

    class OtherPointCodec(PointCodec):
        name = "tests.other-point"

    with pytest.raises(ConfigError, match="replace=True"):
        registry.register(OtherPointCodec())
    assert registry.for_value(Point(0, 0)).name == "tests.point"

    registry.register(OtherPointCodec(), replace=True)
    engine = Engine(StashConfig(store_url=f"file://{store_root}", threshold=0), registry=registry)
    assert engine.serialize(Point(0, 0), COORDINATE)["codec"] == "tests.other-point"


def test_codec_without_name_or_types_is_refused() -> None:
    class Nameless(PointCodec):
        name = ""

    class Typeless(PointCodec):
        name = "tests.typeless"
        type_names = ()

    with pytest.raises(ConfigError):
        CodecRegistry().register(Nameless())
    with pytest.raises(ConfigError):
        CodecRegistry().register(Typeless())


def test_unsupported_type_fails_at_push_naming_the_type_and_register_codec(
    engine: Engine, store_root: Path
) -> None:
    with pytest.raises(UnsupportedTypeError) as info:
        engine.serialize(Unregistered(), COORDINATE)
    assert info.value.type_name == "tests.Unregistered"
    message = str(info.value)
    assert "tests.Unregistered" in message
    assert "register_codec" in message
    assert isinstance(info.value, TypeError) and isinstance(info.value, XComStashError)
    assert not store_root.exists() or not list(store_root.rglob("*.xcs"))


def test_unsupported_type_fails_at_push_even_below_threshold(store_root: Path) -> None:
    engine = Engine(StashConfig(store_url=f"file://{store_root}", threshold=1 << 30))
    with pytest.raises(UnsupportedTypeError, match="register_codec"):
        engine.serialize(Unregistered(), COORDINATE)


def test_empty_registry_treats_even_dataframes_as_unsupported(store_root: Path) -> None:
    engine = Engine(StashConfig(store_url=f"file://{store_root}", threshold=0), registry=CodecRegistry())
    with pytest.raises(UnsupportedTypeError) as info:
        engine.serialize(pd.DataFrame({"a": [1]}), COORDINATE)
    assert info.value.type_name == "pandas.DataFrame"


def test_object_whose_codec_is_not_registered_here_fails_with_decode_error(store_root: Path) -> None:
    producer = engine_with(store_root, PointCodec())
    stored = producer.serialize(Point(1, 2), COORDINATE)
    consumer = Engine(StashConfig(store_url=f"file://{store_root}", threshold=0))  # default registry
    with pytest.raises(DecodeError) as info:
        consumer.deserialize(stored)
    assert isinstance(info.value, XComStashError)
    message = str(info.value)
    assert "tests.point" in message
    assert "dag_id='codec_dag'" in message
    assert stored["uri"] in message


def test_codec_that_fails_to_decode_raises_decode_error_naming_the_codec(store_root: Path) -> None:
    engine = engine_with(store_root, BrokenDecodeCodec())
    stored = engine.serialize(Point(1, 2), COORDINATE)
    with pytest.raises(DecodeError, match="tests.broken-decode") as info:
        engine.deserialize(stored)
    assert "ValueError: this codec cannot read anything" in str(info.value)
    assert info.value.uri == stored["uri"]


def test_codec_that_fails_to_encode_publishes_nothing_and_keeps_the_previous_object(
    store_root: Path,
) -> None:
    good = engine_with(store_root, PointCodec())
    stored = good.serialize(Point(1, 2), COORDINATE)
    (path,) = store_root.rglob("*.xcs")
    before = path.read_bytes()

    bad = engine_with(store_root, FailingEncodeCodec())
    with pytest.raises(RuntimeError, match="half way"):
        bad.serialize(Point(3, 4), COORDINATE)
    written = [p for p in store_root.rglob("*") if p.is_file() and ".links" not in p.parts]
    assert written == [path]  # no new object, no temporary file
    assert path.read_bytes() == before
    assert good.deserialize(stored) == Point(1, 2)
