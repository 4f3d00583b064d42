"""A store around another store: the base of the read cache, fault injection and (later)
replication and metrics.

Every method delegates to :attr:`WrapperStore.inner`, so a subclass overrides only what it
changes and stays a complete :class:`Store` (it passes the same contract suite). Modelled on
zarr-python's ``WrapperStore``.
"""

from __future__ import annotations

import builtins
from contextlib import AbstractContextManager
from typing import Any, Iterator, Sequence

from xcomstash.stores.base import (
    Capabilities,
    ObjectInfo,
    ObjectReader,
    PendingObject,
    ReadSource,
    Store,
    UnfinishedUpload,
)


class WrapperStore(Store):
    """Delegates everything to ``inner``. Wrappers nest: ``FaultyStore(CachingStore(s3))``."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    # The root is the inner store's: a wrapper changes how objects are reached, never which
    # URIs a reference may name (key_for must refuse exactly what the inner store refuses).
    @property  # type: ignore[override]
    def root_uri(self) -> str:  # type: ignore[override]
        return self.inner.root_uri

    @property  # type: ignore[override]
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        return self.inner.capabilities

    def writer(self, key: str) -> AbstractContextManager[PendingObject]:  # type: ignore[override]
        return self.inner.writer(key)

    def new_object(self, staged_key: str) -> AbstractContextManager[PendingObject]:
        return self.inner.new_object(staged_key)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def open_reader(self, key: str) -> ObjectReader:
        return self.inner.open_reader(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def unfinished_uploads(self) -> Iterator[UnfinishedUpload]:
        return self.inner.unfinished_uploads()

    def remove_unfinished(self, upload: UnfinishedUpload) -> None:
        self.inner.remove_unfinished(upload)

    def uri_for(self, key: str) -> str:
        return self.inner.uri_for(key)

    def key_for(self, uri: str) -> str:
        return self.inner.key_for(uri)

    def read_sources(
        self, key: str, *, size_hint: int | None = None, whole: bool = True, prefer: Sequence[str] = ()
    ) -> builtins.list[ReadSource]:
        return self.inner.read_sources(key, size_hint=size_hint, whole=whole, prefer=prefer)

    def close(self) -> None:
        self.inner.close()

    def endpoint(self) -> str | None:
        return self.inner.endpoint()

    def server_time(self) -> float | None:
        return self.inner.server_time()


class WrappedPending:
    """A pending object of the inner store, passed through; wrappers override what they
    change (a cache evicts on publish, a faulty store may refuse it)."""

    def __init__(self, pending: PendingObject) -> None:
        self._pending = pending

    @property
    def cheap_publish(self) -> bool:
        return self._pending.cheap_publish

    @property
    def staged_key(self) -> str:
        return self._pending.staged_key

    def write(self, data: bytes | memoryview) -> int:
        return self._pending.write(data)

    def publish(self, key: str, *, if_absent: bool = False) -> None:
        self._pending.publish(key, if_absent=if_absent)

    def discard(self) -> None:
        self._pending.discard()

    def __getattr__(self, name: str) -> Any:  # flush() and whatever else the inner one offers
        return getattr(self._pending, name)
