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

    A local store is walked by a forked child process (the walk is CPU-bound Python and the
    machine has more than one core) into a temporary file of ``mtime<TAB>size<TAB>key``
    lines; a remote store is listed by a thread (network-bound) into the same kind of file.
    Iterating yields the objects in the walk's order, so each DAG run stays contiguous.
    Keys containing a tab or newline (never ours) are left out, so never deleted.
    """

    def __init__(self, store: Store, prefix: str = "") -> None:
        import tempfile

        fd, self.path = tempfile.mkstemp(prefix="xcomstash-listing-", suffix=".tsv")
        os.close(fd)
        self._error: BaseException | None = None
        self._process = None
        self._thread = None
        if isinstance(store, LocalStore):
            import multiprocessing

            ctx = multiprocessing.get_context("fork")
            self._process = ctx.Process(
                target=_dump, args=(store, prefix, self.path), name="xcomstash-listing", daemon=True
            )
            self._process.start()
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
            self._process.join()
            if self._process.exitcode != 0:
                raise StoreError(f"listing the store failed in the listing process (exit {self._process.exitcode})")
        if self._thread is not None:
            self._thread.join()
            if self._error is not None:
                if isinstance(self._error, StoreError):
                    raise self._error
                raise StoreError(f"listing the store failed: {self._error}")
        with open(self.path, encoding="utf-8", newline="\n") as f:
            for line in f:
                mtime, size, key = line[:-1].split("\t", 2)
                yield ObjectInfo(key, int(size), float(mtime))

    def close(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.terminate()
            self._process.join()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _dump(store: Store, prefix: str, path: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n", buffering=1 << 20) as out:
        for info in list_objects(store, prefix, temporary=True):
            if "\t" in info.key or "\n" in info.key:
                continue
            out.write(f"{info.modified!r}\t{info.size}\t{info.key}\n")
