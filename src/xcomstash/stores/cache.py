"""A size-bounded local read cache of stored objects, keyed by their root digest.

Objects never change once written (a new value gets a new digest), so an entry never goes stale,
and several task processes on one worker can share the cache directory: entries are published
with an atomic rename and read through their own file descriptors. The cache is only a copy:
every read is verified against the reference exactly as a read from the store is, and the
engine drops an entry that fails verification and fetches the object again.
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from xcomstash.stores.base import ObjectReader
from xcomstash.stores.local import FileReader

FETCH_CHUNK = 8 * 1024 * 1024
RESCAN_EVERY = 64


class ReadCache:
    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        #: Bytes this process believes the cache holds: a full scan (which stats every entry)
        #: runs only when this passes the bound, or every ``RESCAN_EVERY`` fills to notice
        #: what other processes added, not after every fill.
        self._estimated_total: int | None = None
        self._fills_since_scan = 0

    def path_for(self, digest: str) -> Path:
        hexdigest = digest.split(":", 1)[-1]
        return self.directory / hexdigest[:2] / f"{hexdigest}.xcs"

    def open(self, digest: str) -> ObjectReader | None:
        path = self.path_for(digest)
        try:
            reader = FileReader(path)
        except FileNotFoundError:
            return None
        try:
            os.utime(path)  # recency for eviction
        except OSError:
            pass
        self.hits += 1
        return reader

    def fill(self, digest: str, origin: ObjectReader, pool: ThreadPoolExecutor) -> ObjectReader:
        """Copy an object from the store into the cache (ranged reads in parallel), then open it."""
        self.misses += 1
        path = self.path_for(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
        try:
            os.ftruncate(fd, origin.size)

            def copy(offset: int) -> None:
                data = origin.read_at(offset, min(FETCH_CHUNK, origin.size - offset))
                os.pwrite(fd, data, offset)

            for _ in pool.map(copy, range(0, origin.size, FETCH_CHUNK)):
                pass
            os.close(fd)
            fd = -1
            # Opened before publishing: another reader's eviction may unlink the entry at once,
            # but cannot take this descriptor's copy away.
            reader = FileReader(tmp)
            try:
                os.replace(tmp, path)
            except BaseException:
                reader.close()
                raise
        except BaseException:
            if fd >= 0:
                os.close(fd)
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        self._fills_since_scan += 1
        if self._estimated_total is not None:
            self._estimated_total += origin.size
        if (
            self._estimated_total is None
            or self._estimated_total > self.max_bytes
            or self._fills_since_scan >= RESCAN_EVERY
        ):
            self._evict(keep=path)
        return reader

    def discard(self, digest: str) -> None:
        try:
            self.path_for(digest).unlink()
        except FileNotFoundError:
            pass

    def _evict(self, keep: Path) -> None:
        """Remove least recently used entries until the cache fits ``max_bytes``."""
        entries = []
        total = 0
        for sub in self.directory.iterdir():
            if not sub.is_dir():
                continue
            for entry in sub.iterdir():
                if entry.name.startswith(".tmp-"):
                    # A temp file older than an hour belongs to a writer that died.
                    try:
                        if time.time() - entry.stat().st_mtime > 3600:
                            entry.unlink()
                    except OSError:
                        pass
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
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
                total -= size
            except FileNotFoundError:
                pass
        self._estimated_total = total
        self._fills_since_scan = 0
