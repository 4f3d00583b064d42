"""Which compression a push uses: ``auto`` picks by where the bytes go."""

from __future__ import annotations

from pathlib import Path

import pytest

from xcomstash import Engine, StashConfig
from xcomstash.coordinate import XComCoordinate
from xcomstash.errors import ConfigError
from xcomstash.format.compression import resolve, validate
from xcomstash.format.container import read_layout

COORD = XComCoordinate("dag", "run", "task", -1, "return_value")


@pytest.mark.parametrize(
    ("name", "local", "used"),
    [("auto", True, "none"), ("auto", False, "zstd"), ("zstd", True, "zstd"), ("none", False, "none")],
)
def test_auto_compresses_only_what_crosses_a_network(name: str, local: bool, used: str) -> None:
    assert resolve(name, local) == used


def test_an_unknown_compression_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match="auto, zstd, none"):
        validate("lz4")


@pytest.mark.parametrize(("configured", "stored"), [(None, "none"), ("zstd", "zstd")])
def test_a_local_store_keeps_objects_uncompressed_unless_asked(tmp_path: Path, configured: str | None, stored: str) -> None:
    extra = {"compression": configured} if configured else {}
    engine = Engine(StashConfig(store_url=f"file://{tmp_path}", threshold=0, **extra))
    row = engine.serialize(b"abc" * 100_000, COORD)
    (path,) = tmp_path.rglob(".blobs/*.xcs")
    data = path.read_bytes()
    assert read_layout(len(data), lambda at, n: data[at : at + n]).header.compression == stored
    assert engine.deserialize(row) == b"abc" * 100_000
