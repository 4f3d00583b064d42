"""The thread pools an engine owns, created on first use (a worker that only moves small
values never starts a thread) and shut down by :meth:`Engine.close`."""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import CancelledError, Executor, Future, ThreadPoolExecutor
from typing import Any, Callable

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


class _Deferred:
    """A submitted call that has not been handed to a pool: run on the thread that asks for its
    result, unless the executor hands it to the pool first. Quacks like a ``Future`` for
    :class:`~xcomstash.format.frames.FrameWriter` and ``Executor.map``."""

    __slots__ = ("_call", "_future")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._call: tuple[Callable[..., Any], tuple[Any, ...]] | None = (fn, args)
        self._future: Future[Any] | None = None

    def dispatch(self, pool: ThreadPoolExecutor) -> None:
        if self._call is not None:
            fn, args = self._call
            self._call = None
            self._future = pool.submit(fn, *args)

    def result(self, timeout: float | None = None) -> Any:
        if self._future is None:
            if self._call is None:
                raise CancelledError()
            fn, args = self._call
            self._call = None
            self._future = done = Future()
            try:
                done.set_result(fn(*args))
            except BaseException as exc:  # kept, and raised below, as a pool's future would
                done.set_exception(exc)
        return self._future.result(timeout)

    def cancel(self) -> bool:
        if self._future is not None:
            return self._future.cancel()
        self._call = None
        return True


class CallerFirst(Executor):
    """The frame pool as one object's frames see it: the first ``inline`` frames wait, and
    run on the calling thread if no more come; once there are more, all of them go to the pool.

    An object of one or two frames (a mapped task's small frame, any value under 2 MiB) is
    then framed or read without a hand-off to another thread and back, which cost more than
    hashing the frame; a large object still spreads over the pool's threads. One per object
    (it remembers whether that object has gone to the pool)."""

    def __init__(self, pool: LazyPool, inline: int = 2) -> None:
        self._pool = pool
        self._inline = inline
        self._held: list[_Deferred] = []
        self._to_pool: ThreadPoolExecutor | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        call = _Deferred(functools.partial(fn, **kwargs) if kwargs else fn, args)
        if self._to_pool is not None:
            call.dispatch(self._to_pool)
            return call
        self._held.append(call)
        if len(self._held) > self._inline:
            self._to_pool = self._pool.get()
            for held in self._held:
                held.dispatch(self._to_pool)  # those already run on the caller stay as they are
            self._held.clear()
        return call

    @property
    def used_pool(self) -> bool:
        """Whether any frame went to the pool (for tests)."""
        return self._to_pool is not None
