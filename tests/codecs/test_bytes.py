"""bytes, bytearray (and memoryview, numpy.bytes_) through the whole engine: the same bytes
come back with the same type, always from the store (BaseXCom's JSON cannot hold bytes)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.codecs.conftest import COORDINATE, row_roundtrip
from xcomstash import Engine, StashConfig
from xcomstash.format.reference import is_reference

PAYLOADS = [
    pytest.param(b"", id="empty"),
    pytest.param(bytes(range(256)), id="every-byte"),
    pytest.param(b"\x00" * 10, id="nuls"),
    pytest.param("ü€😀".encode(), id="utf8"),
    pytest.param(os.urandom(9 * 1024 * 1024 + 3), id="9MiB-random"),  # incompressible, 3 frames
    pytest.param(b"abc" * 3_000_000, id="9MB-repetitive"),  # compressible
]


@pytest.mark.parametrize("compression", ["zstd", "none"])
@pytest.mark.parametrize("data", PAYLOADS)
def test_bytes_round_trip_as_bytes(store_root: Path, data: bytes, compression: str) -> None:
    engine = Engine(StashConfig(store_url=f"file://{store_root}", threshold=0, compression=compression))
    out = row_roundtrip(engine, data)
    assert type(out) is bytes
    assert out == data


@pytest.mark.parametrize("data", PAYLOADS[:4])
def test_bytearray_comes_back_as_bytearray(roundtrip, data: bytes) -> None:
    value = bytearray(data)
    out = roundtrip(value)
    assert type(out) is bytearray
    assert out == value


def test_memoryview_comes_back_as_memoryview_of_the_same_bytes(roundtrip) -> None:
    value = memoryview(b"hello world")
    out = roundtrip(value)
    assert type(out) is memoryview
    assert out.tobytes() == b"hello world"


def test_numpy_bytes_scalar_comes_back_as_numpy_bytes_keeping_trailing_nul(roundtrip) -> None:
    value = np.bytes_(b"ab\x00")
    out = roundtrip(value)
    assert type(out) is np.bytes_
    assert bytes(out) == b"ab\x00"


def test_repetitive_bytes_are_compressed_in_the_store(store_root: Path) -> None:
    engine = Engine(StashConfig(store_url=f"file://{store_root}", threshold=0, compression="zstd"))
    data = b"abc" * 1_000_000
    stored = engine.serialize(data, COORDINATE)
    assert stored["size"] < len(data) // 10
    (path,) = store_root.rglob("*.xcs")
    assert path.stat().st_size == stored["size"]


@pytest.mark.parametrize("value", [b"x", bytearray(b"xy")], ids=["bytes", "bytearray"])
def test_bytes_are_stored_even_when_far_below_threshold(store_root: Path, value) -> None:
    engine = Engine(StashConfig(store_url=f"file://{store_root}", threshold=1 << 30))
    stored = engine.serialize(value, COORDINATE)
    assert is_reference(stored)
    assert stored["codec"] == "bytes"
    assert stored["type"] == type(value).__name__
    assert stored["summary"] == f"{type(value).__name__} {len(value)} bytes"
    out = engine.deserialize(stored)
    assert type(out) is type(value) and out == value
