"""Compression of object bodies: a name in the object header, a streaming writer and reader.

zstd is the default: fast at level 3 and it streams. ``none`` stores the codec bytes as they are.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from typing import Any, BinaryIO, Iterator

from xcomstash.errors import ConfigError

NAMES = ("zstd", "none")
DEFAULT_ZSTD_LEVEL = 3


def validate(name: str) -> str:
    if name not in NAMES:
        raise ConfigError(f"unknown compression {name!r}; choose one of {', '.join(NAMES)}")
    return name


@contextmanager
def writer(name: str, sink: Any, level: int = DEFAULT_ZSTD_LEVEL) -> Iterator[Any]:
    """Yield a stream whose writes land compressed in ``sink``; ``sink`` is left open."""
    if name == "none":
        yield sink
        return
    if name == "zstd":
        import zstandard

        cctx = zstandard.ZstdCompressor(level=level)
        with cctx.stream_writer(sink, closefd=False, write_return_read=True) as stream:
            yield stream
        return
    raise ConfigError(f"unknown compression {name!r}")


def reader(name: str, body: bytes | memoryview) -> BinaryIO:
    """A readable stream of the uncompressed body."""
    if name == "none":
        return io.BytesIO(body)
    if name == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(body, read_across_frames=True)
    raise ValueError(f"unknown compression {name!r}")
