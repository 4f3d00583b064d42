"""Small write-side stream wrappers: count and hash bytes as they pass, without buffering."""

from __future__ import annotations

import hashlib
from typing import Any, BinaryIO


class CountingWriter:
    """Passes writes through to ``sink`` and counts them."""

    def __init__(self, sink: BinaryIO | Any) -> None:
        self._sink = sink
        self.count = 0

    def write(self, data: Any) -> int:
        n = self._sink.write(data)
        size = memoryview(data).nbytes
        self.count += size
        return n if n is not None else size

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        if hasattr(self._sink, "flush"):
            self._sink.flush()

    @property
    def closed(self) -> bool:
        return False


class HashingWriter(CountingWriter):
    """Counts and SHA-256-hashes everything written: the digest the reference carries."""

    def __init__(self, sink: BinaryIO | Any) -> None:
        super().__init__(sink)
        self._hash = hashlib.sha256()

    def write(self, data: Any) -> int:
        self._hash.update(data)
        return super().write(data)

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()
