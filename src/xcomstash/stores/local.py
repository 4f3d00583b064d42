"""A directory on the local filesystem (or a shared mount): the embedded default store.

Writes go to a temporary file in the target directory and are published with ``os.replace``,
which is atomic on POSIX, so readers never observe a partial object.
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from xcomstash.errors import ObjectExistsError, ObjectMissingError, StoreError, StoreFullError, StoreReadError
from xcomstash.stores.base import (
    Capabilities,
    ObjectInfo,
    ObjectReader,
    PendingObject,
    Store,
    UnfinishedUpload,
)


class FileReader:
    """``pread``-based random access: thread-safe, and reads land straight in the caller's buffer."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size

    def read_at(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def readinto_at(self, offset: int, target: memoryview) -> int:
        done = 0
        while done < target.nbytes:
            n = os.preadv(self._fd, [target[done:]], offset + done)
            if n == 0:
                break
            done += n
        return done

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _in_directory(path: Path, make: Callable[[], None]) -> None:
    """``make()`` a file at ``path``, creating its directory first only if it is missing (a
    published key usually lands in the directory its temporary file was written in)."""
    try:
        make()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        make()


class _PendingFile:
    """A temporary file next to its destination, renamed into place on publish."""

    cheap_publish = True

    def __init__(self, store: LocalStore, staged_key: str) -> None:
        self._store = store
        self.staged_key = staged_key
        directory = store._path(staged_key).parent
        try:
            try:  # the directory usually exists (the run's, the task's): no mkdir for it
                fd, self._tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".part")
            except FileNotFoundError:
                directory.mkdir(parents=True, exist_ok=True)
                fd, self._tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".part")
        except OSError as exc:
            raise StoreError(f"cannot write to local store {store.root}: {exc}") from exc
        self._file = os.fdopen(fd, "wb", buffering=1 << 20)
        self._done = False

    def write(self, data: bytes | memoryview) -> int:
        try:
            return self._file.write(data)
        except OSError as exc:
            self.discard()  # a full disk must not stay full of this upload's partial file
            raise self._store._write_error(exc, self.staged_key) from exc

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as exc:
            self.discard()
            raise self._store._write_error(exc, self.staged_key) from exc

    def publish(self, key: str, *, if_absent: bool = False) -> None:
        path = self._store._path(key)
        try:
            self._file.close()
            if if_absent:
                # link() fails if the name exists: two writers cannot both create it.
                try:
                    _in_directory(path, lambda: os.link(self._tmp, path))
                except FileExistsError:
                    self.discard()
                    raise ObjectExistsError(f"{self._store.uri_for(key)} already exists") from None
                os.unlink(self._tmp)
            else:
                _in_directory(path, lambda: os.replace(self._tmp, path))
        except OSError as exc:
            self.discard()
            raise self._store._write_error(exc, key) from exc
        self._done = True

    def discard(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._file.close()  # flushes what is buffered: may fail again on a full disk
        except OSError:
            pass
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass


class LocalStore(Store):
    #: On this machine's disk (or a mount that behaves like it): a cache would only copy it.
    capabilities = Capabilities(local=True, conditional_create=True)

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root_uri = "file://" + str(self.root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _write_error(self, exc: OSError, key: str) -> StoreError:
        """A failed write as a typed error naming the store and the object; a full disk or
        quota is :class:`StoreFullError` (the partial file is already gone)."""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return StoreFullError(
                f"local store {self.root} is full ({exc.strerror}) writing {self.uri_for(key)}: "
                "nothing of this value was kept; free space, move store_url to a larger volume, "
                "or run 'xcomstash reconcile' / 'xcomstash retention'"
            )
        return StoreError(f"cannot write {self.uri_for(key)} in local store {self.root}: {exc}")

    @contextmanager
    def new_object(self, staged_key: str) -> Iterator[PendingObject]:
        pending = _PendingFile(self, staged_key)
        try:
            yield pending
        finally:
            pending.discard()  # a no-op once published

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ObjectMissingError("stored object is missing", uri=self.uri_for(key)) from None
        except IsADirectoryError:
            raise ObjectMissingError("stored object is missing", uri=self.uri_for(key)) from None
        except OSError as exc:
            raise StoreReadError(f"cannot read stored object: {exc}", uri=self.uri_for(key)) from exc

    def open_reader(self, key: str) -> ObjectReader:
        try:
            return FileReader(self._path(key))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectMissingError("stored object is missing", uri=self.uri_for(key)) from None
        except OSError as exc:
            raise StoreReadError(f"cannot read stored object: {exc}", uri=self.uri_for(key)) from exc

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot delete {self.uri_for(key)}: {exc}") from exc

    def head(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ObjectInfo(key=key, size=st.st_size, modified=st.st_mtime)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self._path(prefix) if prefix else self.root
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel = os.path.relpath(dirpath, self.root)
            for name in sorted(filenames):
                if name.startswith(".tmp-"):
                    continue
                key = name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}"
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except OSError as exc:
                    if exc.errno == errno.ENOENT:
                        continue
                    raise
                yield ObjectInfo(key=key, size=st.st_size, modified=st.st_mtime)

    def unfinished_uploads(self) -> Iterator[UnfinishedUpload]:
        """Temporary files of writers that were killed before publishing or discarding."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames):
                if not (name.startswith(".tmp-") and name.endswith(".part")):
                    continue
                full = os.path.join(dirpath, name)
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                yield UnfinishedUpload(key=rel, started=st.st_mtime, token=rel, size=st.st_size)

    def remove_unfinished(self, upload: UnfinishedUpload) -> None:
        name = upload.token.rsplit("/", 1)[-1]
        if not (name.startswith(".tmp-") and name.endswith(".part")) or ".." in upload.token.split("/"):
            raise StoreError(f"not an unfinished upload of {self.root_uri}: {upload.token!r}")
        try:
            os.unlink(self._path(upload.token))
        except FileNotFoundError:
            pass
