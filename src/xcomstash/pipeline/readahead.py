"""Sequential read-ahead for mapped outputs that are pulled one at a time.

Airflow hands a fan-in task a lazy sequence that asks for map index 0, then 1, then 2, each
with its own round trip. Object keys are deterministic, so once two consecutive indexes of
one mapped task have been read, the next ones can be fetched in the background while the task
works. Where the next output lives is the engine's guess (its link, or its per-XCom key), so
each prefetch returns the key it read with the bytes; bytes are used only for a reference to
that same key, and are unverified: the engine checks them against the reference exactly like
bytes from the store, and reads from the store instead if they do not match.
"""

from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Callable

from xcomstash.coordinate import XComCoordinate

WINDOW = 8
#: Objects larger than this are not prefetched (they would pin too much memory).
MAX_OBJECT_BYTES = 32 * 1024 * 1024


class ReadAhead:
    def __init__(
        self,
        fetch: Callable[[XComCoordinate], tuple[str, bytes] | None],
        pool: Callable[[], ThreadPoolExecutor],
    ) -> None:
        self._fetch = fetch
        self._pool = pool
        self._pending: OrderedDict[XComCoordinate, Future[tuple[str, bytes] | None]] = OrderedDict()
        self._last_index: dict[tuple[str, str, str, str], int] = {}

    def take(self, coordinate: XComCoordinate, key: str) -> bytes | None:
        """Prefetched bytes of ``coordinate`` if they were read from ``key``."""
        future = self._pending.pop(coordinate, None)
        if future is None:
            return None
        try:
            fetched = future.result()
        except Exception:
            return None  # the real read reports the real error
        if fetched is None or fetched[0] != key:
            return None
        return fetched[1]

    def note_read(self, coordinate: XComCoordinate | None) -> None:
        """Record a read; on the second consecutive index, fetch the next ``WINDOW`` ones."""
        if coordinate is None or coordinate.map_index < 0:
            return
        task = (coordinate.dag_id, coordinate.run_id, coordinate.task_id, coordinate.key)
        previous = self._last_index.get(task)
        self._last_index[task] = coordinate.map_index
        if previous != coordinate.map_index - 1:
            return
        for step in range(1, WINDOW + 1):
            upcoming = replace(coordinate, map_index=coordinate.map_index + step)
            if upcoming not in self._pending:
                self._pending[upcoming] = self._pool().submit(self._fetch, upcoming)
        while len(self._pending) > 2 * WINDOW:
            _key, stale = self._pending.popitem(last=False)
            stale.cancel()


class MemoryReader:
    """An :class:`ObjectReader` over bytes already in memory."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self.size = len(data)

    def read_at(self, offset: int, length: int) -> bytes:
        return self._data[offset : offset + length].tobytes()

    def readinto_at(self, offset: int, target: memoryview) -> int:
        chunk = self._data[offset : offset + target.nbytes]
        target[: chunk.nbytes] = chunk
        return chunk.nbytes

    def close(self) -> None:
        pass
