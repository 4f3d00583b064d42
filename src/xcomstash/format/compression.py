"""Compression names. Frames are compressed one by one (see :mod:`xcomstash.format.frames`), and
only when a sample shows it pays; ``none`` stores every frame as it is."""

from __future__ import annotations

from xcomstash.errors import ConfigError

NAMES = ("auto", "zstd", "none")
DEFAULT_ZSTD_LEVEL = 1


def validate(name: str) -> str:
    if name not in NAMES:
        raise ConfigError(f"unknown compression {name!r}; choose one of {', '.join(NAMES)}")
    return name


def resolve(name: str, local_store: bool) -> str:
    """The compression a push uses. ``auto``: zstd where bytes cross a network (remote stores,
    whose bandwidth is the limit, so fewer bytes is faster), none on a local store, whose
    write speed (memory, then disk) is several times what zstd compresses per core, so
    compressing only costs time (see docs/performance.md for the measurement)."""
    if name == "auto":
        return "none" if local_store else "zstd"
    return name
