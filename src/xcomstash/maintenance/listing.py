"""Streamed store listing for maintenance, with a fast path for the local store.

``LocalStore.list`` is general (sorted, relative paths computed per directory); reconcile only
needs every object once with each DAG run's keys contiguous, which a depth-first ``scandir``
walk gives at a fraction of the cost (the dedup layout puts every link in a directory of its
own, so a million objects are a couple of million directories).
"""

from __future__ import annotations

import os
from typing import Iterator

from xcomstash.stores.base import ObjectInfo, Store
from xcomstash.stores.local import LocalStore

TEMP_PREFIX = ".tmp-"


def list_objects(store: Store, prefix: str = "", *, temporary: bool = False) -> Iterator[ObjectInfo]:
    """Every object under ``prefix`` once; all keys of one ``<dag>/<run>/`` come together.
    ``temporary``: include a local store's ``.tmp-*.part`` upload files (reconcile collects
    those a killed writer left, once they are older than the grace period)."""
    if isinstance(store, LocalStore):
        return _walk_local(str(store.root), prefix, temporary)
    return store.list(prefix)


def _walk_local(root: str, prefix: str, temporary: bool = False) -> Iterator[ObjectInfo]:
    start = prefix.rstrip("/")
    top = os.path.join(root, *start.split("/")) if start else root
    stack = [(top, start + "/" if start else "")]
    while stack:
        path, key_prefix = stack.pop()
        try:
            entries = os.scandir(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        subdirs = []
        with entries:
            for entry in entries:
                name = entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append((entry.path, key_prefix + name + "/"))
                        continue
                    if not temporary and name.startswith(TEMP_PREFIX):
                        continue
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # deleted while we walk
                    continue
                yield ObjectInfo(key_prefix + name, st.st_size, st.st_mtime)
        # Depth first, so each subtree (each DAG run) is listed contiguously.
        stack.extend(reversed(subdirs))


class BackgroundListing:
    """The store's listing, produced while the caller does other work (reading the rows).

    A local store is walked by GNU ``find`` in a child process (C speed: the dedup layout
    puts every link in directories of its own, so a million objects are millions of
    directories; Python's walk spends over a minute of CPU on them) writing
    ``mtime<TAB>size<TAB>key<NUL>`` records to a temporary file; without ``find`` a thread
    runs the Python walk. A remote store is listed by a thread (network-bound) into the same
    kind of file. Iterating yields the objects in the walk's order (depth first, so each DAG
    run stays contiguous).
    """

    def __init__(self, store: Store, prefix: str = "") -> None:
        import shutil
        import tempfile

        fd, self.path = tempfile.mkstemp(prefix="xcomstash-listing-", suffix=".bin")
        os.close(fd)
        self._error: BaseException | None = None
        self._process = None
        self._thread = None
        self._key_prefix = ""
        find = shutil.which("find")
        if isinstance(store, LocalStore) and find:
            import subprocess

            start = prefix.rstrip("/")
            top = os.path.join(str(store.root), *start.split("/")) if start else str(store.root)
            self._key_prefix = start + "/" if start else ""
            self._top_exists = os.path.isdir(top)
            if self._top_exists:
                with open(self.path, "wb") as out:
                    self._process = subprocess.Popen(
                        # Not the upload files of killed writers (Store.unfinished_uploads).
                        [find, top, "-mindepth", "1", "-type", "f", "!", "-name", TEMP_PREFIX + "*",
                         "-printf", "%T@\\t%s\\t%P\\0"],
                        stdout=out,
                        stderr=subprocess.PIPE,
                    )
        else:
            import threading

            self._thread = threading.Thread(
                target=self._dump_in_thread, args=(store, prefix), name="xcomstash-listing", daemon=True
            )
            self._thread.start()

    def _dump_in_thread(self, store: Store, prefix: str) -> None:
        try:
            _dump(store, prefix, self.path)
        except BaseException as exc:  # re-raised in the consumer
            self._error = exc

    def __iter__(self) -> Iterator[ObjectInfo]:
        from xcomstash.errors import StoreError

        if self._process is not None:
            _, err = self._process.communicate()
            if self._process.returncode != 0:
                raise StoreError(
                    f"listing the store failed: find exited {self._process.returncode}: {err.decode(errors='replace')[-500:]}"
                )
        if self._thread is not None:
            self._thread.join()
            if self._error is not None:
                if isinstance(self._error, StoreError):
                    raise self._error
                raise StoreError(f"listing the store failed: {self._error}")
        key_prefix = self._key_prefix
        with open(self.path, "rb") as f:
            tail = b""
            while True:
                chunk = f.read(1 << 22)
                if not chunk:
                    break
                records = (tail + chunk).split(b"\0")
                tail = records.pop()
                for record in records:
                    parts = record.split(b"\t", 2)
                    if len(parts) != 3:
                        continue
                    try:
                        key = key_prefix + parts[2].decode("utf-8")
                    except UnicodeDecodeError:  # not a name we write: never touched
                        continue
                    yield ObjectInfo(key, int(parts[1]), float(parts[0]))

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _dump(store: Store, prefix: str, path: str) -> None:
    with open(path, "wb", buffering=1 << 20) as out:
        # Upload files of killed writers are not objects: reconcile finds them through
        # Store.unfinished_uploads, as in every other store.
        for info in list_objects(store, prefix):
            out.write(f"{info.modified!r}\t{info.size}\t{info.key}\0".encode("utf-8", "surrogateescape"))
