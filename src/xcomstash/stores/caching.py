"""A size-bounded local read-through cache in front of a remote store.

Why it looks the way it does:

- **Keyed by the store key, not by content.** An entry lives at
  ``<dir>/<2 hex>/<hex>.xcs`` where ``hex`` is the SHA-256 of ``inner.uri_for(key)``, so two
  stores (or two prefixes) can share one directory without colliding. An object may be
  rewritten under the same key (a task retry), so an entry can be stale; that is acceptable
  because the cache never has to be right: the pull path verifies every source against the
  reference and calls :attr:`ReadSource.discard` on a mismatch, which evicts the entry, and
  the next source (the store) refills it.
- **Only the pull path reads through it.** :meth:`CachingStore.read_sources` puts the cache
  first; :meth:`get` and :meth:`open_reader` go straight to the inner store, so maintenance
  (verify, reconcile, stats) always sees the store itself, never a possibly stale copy.
- **Shared by processes.** Several task processes on one worker use the same directory:
  entries are written to a temporary file and published with an atomic rename, and every
  reader has its own file descriptor (opened before the rename), so another process evicting
  an entry can never pull a file away from under a read.
- **Bounded, least recently used first.** A hit bumps the entry's mtime; a scan (which stats
  every entry) runs only when this process's estimate passes the bound or every
  :data:`RESCAN_EVERY` fills (to notice what other processes added), and deletes the oldest
  entries until the cache fits. Temporary files left by a writer that died are removed then.
- **A failing cache never fails a read.** Disk full, an unwritable directory, an object larger
  than the bound: the inner store's reader is served uncached, with a warning.
- **Reads start before the fill ends.** An object larger than one fetch is served by a
  :class:`_FillingReader` while its ranges are still arriving: a read waits only for the ranges
  it covers (the last one, holding the frame table and footer, is fetched first), so verifying
  and decoding the first frames overlaps downloading the rest.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Sequence

from xcomstash.errors import ConfigError
from xcomstash.stores.base import ObjectReader, PendingObject, ReadSource, Store
from xcomstash.stores.local import FileReader
from xcomstash.stores.wrapper import WrappedPending, WrapperStore

log = logging.getLogger("xcomstash.stores.caching")

#: Size of the ranged reads a fill issues (in parallel when the inner store reads ranges cheaply).
FETCH_CHUNK = 8 * 1024 * 1024
#: Threads copying ranges of one object into the cache.
FILL_THREADS = 8
#: A full scan runs at least every this many fills, to notice entries other processes added.
RESCAN_EVERY = 64
#: A temporary file older than this belongs to a writer that died: a scan removes it.
STALE_TEMP_SECONDS = 3600.0
ENTRY_SUFFIX = ".xcs"
#: The name of the cache's read source (what a pull's ``source`` says when the cache served).
CACHE_SOURCE = "cache"
TEMP_PREFIX = ".tmp-"


class _CacheUnusable(Exception):
    """The cache directory failed (or the origin served fewer bytes than its size): serve the
    inner reader uncached instead of failing the read."""


class CachingStore(WrapperStore):
    """``inner`` with a local read-through cache of at most ``max_bytes`` in ``directory``.

    ``max_bytes == 0`` caches nothing (the cache source is left out of :meth:`read_sources`).
    """

    def __init__(self, inner: Store, directory: str | os.PathLike[str], max_bytes: int) -> None:
        super().__init__(inner)
        if max_bytes < 0:
            raise ConfigError(f"cache max_bytes must be >= 0, got {max_bytes!r}")
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        #: Reads the cache served (an entry was opened).
        self.hits = 0
        #: Reads served from behind the cache (an inner source opened), cached or not.
        self.misses = 0
        self._lock = threading.Lock()
        #: Bytes this process believes the cache holds; ``None`` until the first scan.
        self._estimated_total: int | None = None
        self._fills_since_scan = 0
        #: Bytes this process has filled in all; a scan adds those filled while it ran, which
        #: it may not have seen, so concurrent fills never leave the estimate too low.
        self._filled_bytes = 0
        #: One trim at a time in this process: a later one sees what an earlier one removed.
        self._trim_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._warned: set[str] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"CachingStore({self.inner!r}, {str(self.directory)!r}, max_bytes={self.max_bytes})"

    # ------------------------------------------------------------------ entries

    def path_for(self, key: str) -> Path:
        """Where the entry of ``key`` lives (whether or not it exists)."""
        digest = hashlib.sha256(self.inner.uri_for(key).encode("utf-8", "surrogatepass")).hexdigest()
        return self.directory / digest[:2] / f"{digest}{ENTRY_SUFFIX}"

    def open_cached(self, key: str) -> ObjectReader | None:
        """A reader of the cached entry of ``key`` (a hit), or ``None`` (a miss, or a cache
        that cannot be read: never an error). The entry is not verified: the caller does that."""
        path = self.path_for(key)
        try:
            reader = FileReader(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            self._warn("open", "xcomstash: read cache unusable, reading from the store: %s", exc)
            return None
        try:
            os.utime(path)  # recency for LRU eviction; the entry may already be evicted again
        except OSError:
            pass
        with self._lock:
            self.hits += 1
        return reader

    def evict(self, key: str) -> None:
        """Drop the entry of ``key`` if there is one. Readers that have it open keep reading."""
        try:
            self.path_for(key).unlink()
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            self._warn("evict", "xcomstash: cannot evict read cache entry: %s", exc)

    # ------------------------------------------------------------------ reads

    def read_sources(
        self, key: str, *, size_hint: int | None = None, whole: bool = True, prefer: Sequence[str] = ()
    ) -> list[ReadSource]:
        """The cache entry first, then each inner source, wrapped so that opening it fills the
        cache and serves the filled entry; discarding it evicts the entry too. For a partial
        read (``whole=False``) the inner sources are offered as they are: filling would fetch
        the whole object, which is what a partial read is there to avoid."""
        inner_sources = self.inner.read_sources(key, size_hint=size_hint, whole=whole, prefer=prefer)
        sources: list[ReadSource] = []
        if self._may_hold(size_hint):
            sources.append(ReadSource(CACHE_SOURCE, partial(self.open_cached, key), partial(self.evict, key)))
        if not whole:
            return sources + inner_sources
        for source in inner_sources:
            sources.append(
                ReadSource(
                    source.name,
                    partial(self._open_through, key, source, size_hint),
                    partial(self._discard_through, key, source),
                )
            )
        return sources

    def _may_hold(self, size: int | None) -> bool:
        return self.max_bytes > 0 and (size is None or size <= self.max_bytes)

    def _discard_through(self, key: str, source: ReadSource) -> None:
        self.evict(key)
        source.discard()

    def _open_through(self, key: str, source: ReadSource, size_hint: int | None) -> ObjectReader | None:
        origin = source.open()
        if origin is None:
            return None
        with self._lock:
            self.misses += 1
        size = origin.size
        if not self._may_hold(size):
            if self.max_bytes > 0:
                self._warn(
                    "too-large",
                    "xcomstash: object of %d bytes is larger than the read cache (%d bytes): "
                    "reading it uncached",
                    size,
                    self.max_bytes,
                )
            return origin
        if size_hint is not None and size != size_hint:
            # Not the object the reference names (rewritten, or damaged): verification will
            # say so; caching it would only cost a copy that is discarded right away.
            log.debug("xcomstash: %s is %d bytes, expected %d: not caching", key, size, size_hint)
            return origin
        try:
            if size > FETCH_CHUNK and self.inner.capabilities.ranged_reads:
                return self._start_fill(key, origin)  # owns origin from here on
            reader = self._fill(key, origin)
        except _CacheUnusable as exc:
            self._warn("fill", "xcomstash: read cache unusable, reading from the store: %s", exc)
            return origin
        except BaseException:
            origin.close()
            raise
        origin.close()
        return reader

    def _start_fill(self, key: str, origin: ObjectReader) -> ObjectReader:
        """Start copying ``origin`` into a temporary file in the background and return a reader
        of it at once (see :class:`_FillingReader`). Cache directory errors before the first
        byte is fetched are :class:`_CacheUnusable`."""
        path = self.path_for(key)
        fd, tmp = self._new_temp(path)
        try:
            os.ftruncate(fd, origin.size)
            file = FileReader(tmp)
        except OSError as exc:
            os.close(fd)
            _unlink(tmp)
            raise _CacheUnusable(exc) from exc
        return _FillingReader(self, origin, fd, file, tmp, path)

    def _new_temp(self, path: Path) -> tuple[int, str]:
        """A temporary file next to the entry ``path`` will be (its directory made if missing)."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=".part")
        except OSError as exc:
            raise _CacheUnusable(exc) from exc

    def _fill(self, key: str, origin: ObjectReader) -> ObjectReader:
        """Copy ``origin`` into a temporary file (ranged reads in parallel), open it, publish it
        with an atomic rename, and return the reader opened before the rename.

        Errors of ``origin`` propagate (the source failed); errors of the cache directory become
        :class:`_CacheUnusable` (the caller serves ``origin`` instead).
        """
        size = origin.size
        path = self.path_for(key)
        fd, tmp = self._new_temp(path)
        try:
            try:
                os.ftruncate(fd, size)
            except OSError as exc:
                raise _CacheUnusable(exc) from exc
            self._copy(origin, fd, size)
            try:
                os.close(fd)
            except OSError as exc:
                raise _CacheUnusable(exc) from exc
            finally:
                fd = -1
            try:
                # Opened before publishing: another process's eviction may unlink the entry at
                # once, but cannot take this descriptor's copy away.
                reader = FileReader(tmp)
            except OSError as exc:
                raise _CacheUnusable(exc) from exc
            try:
                os.replace(tmp, path)
            except OSError as exc:
                reader.close()
                raise _CacheUnusable(exc) from exc
        except BaseException:
            if fd >= 0:
                os.close(fd)
            _unlink(tmp)
            raise
        self._warned.discard("fill")  # working again: warn afresh next time it breaks
        self._after_fill(size, keep=path)
        return reader

    def _copy(self, origin: ObjectReader, fd: int, size: int) -> None:
        """Fill ``fd`` with ``origin``'s bytes. Every copy task has finished before this returns
        (so none can write to ``fd`` after it is closed, or to a file reusing its number)."""
        stop = threading.Event()

        def copy(offset: int) -> None:
            if stop.is_set():
                return
            length = min(FETCH_CHUNK, size - offset)
            try:
                data = origin.read_at(offset, length)
                if len(data) != length:
                    raise _CacheUnusable(
                        f"the store served {len(data)} bytes at offset {offset} of an object of "
                        f"{size} bytes"
                    )
                view = memoryview(data)
                written = 0
                while written < view.nbytes:
                    try:
                        n = os.pwrite(fd, view[written:], offset + written)
                    except OSError as exc:
                        raise _CacheUnusable(exc) from exc
                    if n <= 0:
                        raise _CacheUnusable(f"cannot write the cache entry at offset {offset + written}")
                    written += n
            except BaseException:
                stop.set()
                raise

        offsets = range(0, size, FETCH_CHUNK)
        if len(offsets) <= 1 or not self.inner.capabilities.ranged_reads:
            for offset in offsets:
                copy(offset)
            return
        futures = [self._fill_pool().submit(copy, offset) for offset in offsets]
        wait(futures)
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error

    def _fill_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(FILL_THREADS, thread_name_prefix="xcomstash-cache")
            return self._pool

    # ------------------------------------------------------------------ bound

    def _after_fill(self, size: int, keep: Path) -> None:
        with self._lock:
            self._fills_since_scan += 1
            self._filled_bytes += size
            if self._estimated_total is not None:
                self._estimated_total += size
            scan = (
                self._estimated_total is None
                or self._estimated_total > self.max_bytes
                or self._fills_since_scan >= RESCAN_EVERY
            )
        if scan:
            try:
                self.trim(keep=keep)
            except OSError as exc:
                self._warn("trim", "xcomstash: cannot trim the read cache: %s", exc)

    def trim(self, keep: Path | None = None) -> None:
        """Delete least recently used entries until the cache fits ``max_bytes`` (never
        ``keep``, the entry just filled), and temporary files of writers that died."""
        with self._trim_lock:
            self._trim(keep)

    def _trim(self, keep: Path | None) -> None:
        with self._lock:
            filled_at_scan = self._filled_bytes
        entries: list[tuple[float, int, Path]] = []
        total = 0
        now = time.time()
        try:
            subdirs = list(self.directory.iterdir())
        except FileNotFoundError:
            subdirs = []
        for sub in subdirs:
            try:
                children = list(sub.iterdir()) if sub.is_dir() else []
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in children:
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                if entry.name.startswith(TEMP_PREFIX):
                    if now - st.st_mtime > STALE_TEMP_SECONDS:
                        try:
                            entry.unlink()
                        except OSError:
                            pass
                    continue
                if not entry.name.endswith(ENTRY_SUFFIX):
                    continue
                entries.append((st.st_mtime, st.st_size, entry))
                total += st.st_size
        entries.sort()
        for _mtime, size, entry in entries:
            if total <= self.max_bytes:
                break
            if entry == keep:
                continue
            try:
                entry.unlink()
            except FileNotFoundError:
                pass  # another process evicted it: it no longer counts either way
            total -= size
        with self._lock:
            self._estimated_total = total + (self._filled_bytes - filled_at_scan)
            self._fills_since_scan = 0

    # ------------------------------------------------------------------ writes

    @contextmanager
    def writer(self, key: str) -> Iterator[PendingObject]:  # type: ignore[override]
        """The inner writer; once it published, this process's entry of ``key`` is stale."""
        with self.inner.writer(key) as pending:
            yield pending
        self.evict(key)

    @contextmanager
    def new_object(self, staged_key: str) -> Iterator[PendingObject]:
        with self.inner.new_object(staged_key) as pending:
            yield _EvictOnPublish(pending, self)

    def delete(self, key: str) -> None:
        try:
            self.inner.delete(key)
        finally:
            self.evict(key)

    def close(self) -> None:
        """Stop the fill threads, then close the inner store. The entries stay (they are shared)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        if not self._closed:
            self._closed = True
            self.inner.close()

    # ------------------------------------------------------------------ helpers

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        """Warn once per kind of trouble (a broken cache would otherwise warn on every read)."""
        if kind in self._warned:
            log.debug(message, *args)
        else:
            self._warned.add(kind)
            log.warning(message, *args)


class _EvictOnPublish(WrappedPending):
    """A pending object of the inner store whose publish also evicts the published key's entry."""

    def __init__(self, pending: PendingObject, store: CachingStore) -> None:
        super().__init__(pending)
        self._store = store

    def publish(self, key: str, *, if_absent: bool = False) -> None:
        self._pending.publish(key, if_absent=if_absent)
        self._store.evict(key)


class _FillingReader:
    """The reader of a cache entry that is still being filled.

    The fill copies ``FETCH_CHUNK`` ranges on the cache's pool, the last range first (it holds
    the frame table and footer every read starts with), then in order; a read waits only until
    the ranges it covers are in the file. When every range is in, the entry is published (an
    atomic rename) from the thread that copied the last one. If the origin fails, every read that
    still needs a missing range raises that error (the pull then tries its next source); if the
    cache directory fails, reads of missing ranges go to the origin instead, and nothing is
    published. Closing before the fill ends stops it and removes the temporary file.
    """

    def __init__(self, store: CachingStore, origin: ObjectReader, fd: int, file: FileReader, tmp: str, path: Path) -> None:
        self.size = origin.size
        self._store, self._origin, self._path, self._tmp = store, origin, path, tmp
        #: Written by the fill; ``_file`` reads the same file through a descriptor of its own.
        self._fd, self._file = fd, file
        count = -(-self.size // FETCH_CHUNK)
        self._filled = bytearray(count)
        self._left = count
        self._changed = threading.Condition()
        self._error: BaseException | None = None
        self._unusable = False
        self._published = False
        self._closed = False
        self._stop = threading.Event()
        order = [count - 1, *range(count - 1)]
        pool = store._fill_pool()
        self._jobs = [pool.submit(self._copy, index) for index in order]

    # ------------------------------------------------------------------ the fill

    def _copy(self, index: int) -> None:
        if self._stop.is_set():
            return
        offset = index * FETCH_CHUNK
        length = min(FETCH_CHUNK, self.size - offset)
        try:
            data = self._origin.read_at(offset, length)
            if len(data) != length:
                raise _CacheUnusable(
                    f"the store served {len(data)} bytes at offset {offset} of an object of {self.size} bytes"
                )
            view, written = memoryview(data), 0
            while written < length:
                try:
                    n = os.pwrite(self._fd, view[written:], offset + written)
                except OSError as exc:
                    raise _CacheUnusable(exc) from exc
                if n <= 0:
                    raise _CacheUnusable(f"cannot write the cache entry at offset {offset + written}")
                written += n
        except _CacheUnusable as exc:
            self._stop.set()
            self._store._warn("fill", "xcomstash: read cache unusable, reading from the store: %s", exc)
            with self._changed:
                self._unusable = True
                self._changed.notify_all()
            return
        except BaseException as exc:
            self._stop.set()
            with self._changed:
                if self._error is None:
                    self._error = exc
                self._changed.notify_all()
            return
        with self._changed:
            self._filled[index] = 1
            self._left -= 1
            complete = self._left == 0
            self._changed.notify_all()
        if complete:
            self._publish()

    def _publish(self) -> None:
        fd, self._fd = self._fd, -1
        try:
            os.close(fd)
            os.replace(self._tmp, self._path)
        except OSError as exc:
            self._store._warn("fill", "xcomstash: read cache unusable, reading from the store: %s", exc)
            _unlink(self._tmp)
            return
        self._published = True
        self._store._warned.discard("fill")
        self._store._after_fill(self.size, keep=self._path)

    # ------------------------------------------------------------------ reads

    def _in_file(self, offset: int, length: int) -> bool:
        """Wait until ``[offset, offset + length)`` is in the file (True), or must be read from
        the origin because the cache failed (False); raises the origin's error."""
        if length <= 0 or offset >= self.size:
            return True
        first, last = offset // FETCH_CHUNK, (min(offset + length, self.size) - 1) // FETCH_CHUNK
        with self._changed:
            while self._filled.find(0, first, last + 1) != -1:
                if self._error is not None:
                    raise self._error
                if self._unusable:
                    return False
                self._changed.wait()
        return True

    def read_at(self, offset: int, length: int) -> bytes:
        source = self._file if self._in_file(offset, length) else self._origin
        return source.read_at(offset, length)

    def readinto_at(self, offset: int, target: memoryview) -> int:
        source = self._file if self._in_file(offset, target.nbytes) else self._origin
        return source.readinto_at(offset, target)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for job in self._jobs:
            job.cancel()
        wait(self._jobs)  # none may write to the file, or publish it, after this
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if not self._published:
            _unlink(self._tmp)
        self._file.close()
        self._origin.close()

    def __enter__(self) -> _FillingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
