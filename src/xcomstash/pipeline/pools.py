"""The thread pools an engine owns, created on first use (a worker that only moves small
values never starts a thread) and shut down by :meth:`Engine.close`."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

#: Objects fetched at once when a task pulls many values (a mapped task's outputs).
FANIN_WORKERS = 8


class LazyPool:
    def __init__(self, max_workers: int, name: str) -> None:
        self.max_workers = max_workers
        self.name = name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def get(self) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix=self.name)
                pool = self._pool
        return pool

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


class Pools:
    """Frames (compress, hash, fetch: one thread per core) and fan-in (objects at once)."""

    def __init__(self) -> None:
        self.frames = LazyPool(max(2, os.cpu_count() or 2), "xcomstash")
        self.fanin = LazyPool(FANIN_WORKERS, "xcomstash-fanin")

    def shutdown(self) -> None:
        self.fanin.shutdown()
        self.frames.shutdown()
