"""Fault injection around any store, to test failover, verification and error reporting.

Shipped in the package (not only in the tests) so users can check how their own deployment
reacts to a store that is down, slow, corrupting or dying mid-read::

    store = FaultyStore(real_store, corrupt_reads=1)        # the first read is damaged
    store = FaultyStore(real_store, fail_reads=True, only_keys=lambda k: k.startswith("dag_a/"))

Faults apply to :meth:`get`, :meth:`open_reader` and every source of :meth:`read_sources`
(so ``FaultyStore(CachingStore(s3))`` damages what the cache serves too). ``bool | int``
options mean "always" (``True``), "never" (``False``) or "the first N times" (an int).
Listing, ``head`` and ``delete`` are never faulted.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Iterator, Sequence

from xcomstash.errors import StoreReadError, StoreUnavailableError
from xcomstash.stores.base import ObjectReader, PendingObject, ReadSource, Store
from xcomstash.stores.wrapper import WrappedPending, WrapperStore


class _Budget:
    """How many more times a fault fires: ``None`` for always."""

    def __init__(self, setting: bool | int, name: str) -> None:
        if isinstance(setting, bool):
            self.remaining: int | None = None if setting else 0
        elif isinstance(setting, int) and setting >= 0:
            self.remaining = setting
        else:
            raise ValueError(f"{name} must be a bool or a count >= 0, got {setting!r}")
        self._lock = threading.Lock()

    def fire(self) -> bool:
        with self._lock:
            if self.remaining is None:
                return True
            if self.remaining > 0:
                self.remaining -= 1
                return True
            return False


class FaultyStore(WrapperStore):
    """``inner`` with faults injected into reads and writes.

    :param fail_reads: opening (``get``, ``open_reader``, a read source) raises
        :class:`StoreReadError` (a :class:`StoreUnavailableError`): the store is down.
    :param fail_writes: publishing raises :class:`StoreUnavailableError` after the bytes were
        streamed (the upload fails at completion); nothing is published.
    :param corrupt_reads: the reader serves the object with one byte flipped, at
        ``corrupt_offset`` (negative: from the end; default the last byte).
    :param truncate_reads: the reader serves the object cut to ``truncate_to`` bytes
        (default: half its size), as a store that lost the end of an object would.
    :param delay: seconds slept before every open and every read (a slow or distant store).
    :param fail_after_bytes_read: once this store has served this many bytes in total, every
        further read or open raises :class:`StoreReadError` (the store died mid-transfer).
    :param only_keys: faults apply only to keys for which this returns True.
    """

    def __init__(
        self,
        inner: Store,
        *,
        fail_reads: bool | int = False,
        fail_writes: bool | int = False,
        corrupt_reads: bool | int = False,
        corrupt_offset: int = -1,
        truncate_reads: bool | int = False,
        truncate_to: int | None = None,
        delay: float = 0.0,
        fail_after_bytes_read: int | None = None,
        only_keys: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__(inner)
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay!r}")
        if truncate_to is not None and truncate_to < 0:
            raise ValueError(f"truncate_to must be >= 0, got {truncate_to!r}")
        if fail_after_bytes_read is not None and fail_after_bytes_read < 0:
            raise ValueError(f"fail_after_bytes_read must be >= 0, got {fail_after_bytes_read!r}")
        self._fail_reads = _Budget(fail_reads, "fail_reads")
        self._fail_writes = _Budget(fail_writes, "fail_writes")
        self._corrupt_reads = _Budget(corrupt_reads, "corrupt_reads")
        self._truncate_reads = _Budget(truncate_reads, "truncate_reads")
        self.corrupt_offset = corrupt_offset
        self.truncate_to = truncate_to
        self.delay = delay
        self.fail_after_bytes_read = fail_after_bytes_read
        self.only_keys = only_keys
        #: Faults injected so far (failed opens and reads, damaged readers, failed publishes).
        self.faults = 0
        #: Bytes served by readers of keys the faults apply to (what ``fail_after_bytes_read`` counts).
        self.bytes_read = 0
        self._dead = False
        self._lock = threading.Lock()

    def applies(self, key: str) -> bool:
        return self.only_keys is None or bool(self.only_keys(key))

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> bytes:
        if not self.applies(key):
            return self.inner.get(key)
        reader = self._open(key, partial(self.inner.open_reader, key))
        assert reader is not None
        try:
            return reader.read_at(0, reader.size)
        finally:
            reader.close()

    def open_reader(self, key: str) -> ObjectReader:
        if not self.applies(key):
            return self.inner.open_reader(key)
        reader = self._open(key, partial(self.inner.open_reader, key))
        assert reader is not None
        return reader

    def read_sources(
        self, key: str, *, size_hint: int | None = None, whole: bool = True, prefer: Sequence[str] = ()
    ) -> list[ReadSource]:
        sources = self.inner.read_sources(key, size_hint=size_hint, whole=whole, prefer=prefer)
        if not self.applies(key):
            return sources
        return [ReadSource(s.name, partial(self._open, key, s.open), s.discard) for s in sources]

    def _open(self, key: str, opener: Callable[[], ObjectReader | None]) -> ObjectReader | None:
        self._slow()
        self._check_alive(key)
        if self._fail_reads.fire():
            self._count_fault()
            raise StoreReadError("injected fault: store unavailable", uri=self.uri_for(key))
        reader = opener()
        if reader is None:
            return None
        corrupt = self._corrupt_reads.fire()
        truncate = self._truncate_reads.fire()
        if corrupt or truncate:
            self._count_fault()
        return _FaultyReader(reader, self, key, corrupt=corrupt, truncate=truncate)

    def _slow(self) -> None:
        if self.delay:
            time.sleep(self.delay)

    def _check_alive(self, key: str, *, reading: int | None = None) -> None:
        """Raise once ``fail_after_bytes_read`` is reached: an open fails when the limit has
        been served; a read fails when it would go past the limit. Once failed, always failed."""
        limit = self.fail_after_bytes_read
        if limit is None:
            return
        with self._lock:
            if not self._dead:
                if reading is None:
                    self._dead = self.bytes_read >= limit
                else:
                    self._dead = self.bytes_read + reading > limit
            dead = self._dead
        if dead:
            self._count_fault()
            raise StoreReadError(
                f"injected fault: store failed after {limit} bytes read", uri=self.uri_for(key)
            )

    def _served(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_read += nbytes

    def _count_fault(self) -> None:
        with self._lock:
            self.faults += 1

    # ------------------------------------------------------------------ writes

    @contextmanager
    def writer(self, key: str) -> Iterator[PendingObject]:  # type: ignore[override]
        """:meth:`new_object` published at the end, so ``fail_writes`` applies here too."""
        with self.new_object(key) as pending:
            yield pending
            pending.publish(key)

    @contextmanager
    def new_object(self, staged_key: str) -> Iterator[PendingObject]:
        with self.inner.new_object(staged_key) as pending:
            yield _FaultyPending(pending, self)


class _FaultyReader:
    """A reader serving ``inner``'s bytes, possibly cut short and with one byte flipped."""

    def __init__(
        self, inner: ObjectReader, store: FaultyStore, key: str, *, corrupt: bool, truncate: bool
    ) -> None:
        self._inner, self._store, self._key = inner, store, key
        size = inner.size
        if truncate:
            size = min(size, store.truncate_to if store.truncate_to is not None else size // 2)
        self.size = size
        self._flip: int | None = None
        if corrupt and size > 0:
            position = store.corrupt_offset if store.corrupt_offset >= 0 else size + store.corrupt_offset
            if 0 <= position < size:
                self._flip = position

    def read_at(self, offset: int, length: int) -> bytes:
        store = self._store
        store._slow()
        length = max(0, min(length, self.size - offset))
        store._check_alive(self._key, reading=length)
        data = self._inner.read_at(offset, length) if length else b""
        flip = self._flip
        if flip is not None and offset <= flip < offset + len(data):
            damaged = bytearray(data)
            damaged[flip - offset] ^= 0xFF
            data = bytes(damaged)
        store._served(len(data))
        return data

    def readinto_at(self, offset: int, target: memoryview) -> int:
        data = self.read_at(offset, target.nbytes)
        target[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._inner.close()


class _FaultyPending(WrappedPending):
    """A pending object of the inner store whose publish may fail (discarding the bytes)."""

    def __init__(self, pending: PendingObject, store: FaultyStore) -> None:
        super().__init__(pending)
        self._store = store

    def publish(self, key: str, *, if_absent: bool = False) -> None:
        store = self._store
        if store.applies(key) and store._fail_writes.fire():
            store._count_fault()
            self._pending.discard()
            raise StoreUnavailableError(f"injected fault: cannot publish {store.uri_for(key)}")
        self._pending.publish(key, if_absent=if_absent)
