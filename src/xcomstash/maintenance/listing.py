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


def list_objects(store: Store, prefix: str = "") -> Iterator[ObjectInfo]:
    """Every object under ``prefix`` once; all keys of one ``<dag>/<run>/`` come together."""
    if isinstance(store, LocalStore):
        return _walk_local(str(store.root), prefix)
    return store.list(prefix)


def _walk_local(root: str, prefix: str) -> Iterator[ObjectInfo]:
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
                    if name.startswith(TEMP_PREFIX):
                        continue
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # deleted while we walk
                    continue
                yield ObjectInfo(key_prefix + name, st.st_size, st.st_mtime)
        # Depth first, so each subtree (each DAG run) is listed contiguously.
        stack.extend(reversed(subdirs))
