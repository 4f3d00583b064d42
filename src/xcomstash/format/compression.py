"""Compression names. Frames are compressed one by one (see :mod:`xcomstash.format.frames`), and
only when a sample shows it pays; ``none`` stores every frame as it is."""

from __future__ import annotations

from xcomstash.errors import ConfigError

NAMES = ("zstd", "none")
DEFAULT_ZSTD_LEVEL = 1


def validate(name: str) -> str:
    if name not in NAMES:
        raise ConfigError(f"unknown compression {name!r}; choose one of {', '.join(NAMES)}")
    return name
