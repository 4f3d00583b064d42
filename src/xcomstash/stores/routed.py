"""Per-DAG stores: the values of DAGs matching a pattern go to a store of their own.

    [xcomstash]
    dag_policies = [{"dags": "pii_*", "store_url": "s3://pii-bucket/xcom"}]

keeps every value of the ``pii_*`` DAGs in a separate bucket (its own access policy, its own
retention, its own region), while the other DAGs use ``store_url``. Patterns are matched
against the DAG id at the head of each key, in order; the first matching entry decides (an
entry without ``store_url`` keeps its DAGs in the default store).

**Writes and deletes** go to the DAG's store. **Reads** try the DAG's store first, then the
other configured stores, as a replicated store fails over: a value pushed before its DAG was
given a store of its own stays readable where it was written. Nothing outside the configured
stores is ever read (:meth:`key_for` refuses any other root), and what a store serves is
verified against the signed reference like any other source.
"""

from __future__ import annotations

import builtins
import dataclasses
import fnmatch
from contextlib import AbstractContextManager
from typing import Callable, Iterator, Sequence

from xcomstash.errors import ConfigError, InvalidReferenceError, ObjectMissingError, StoreError
from xcomstash.format.keyspace import dag_of
from xcomstash.stores import composite
from xcomstash.stores.composite import combined_capabilities, list_once
from xcomstash.stores.base import (
    ObjectInfo,
    ObjectReader,
    PendingObject,
    ReadSource,
    Store,
    UnfinishedUpload,
)


class RoutedStore(Store):
    def __init__(
        self, default: Store, routes: Sequence[tuple[str, Store | None]], *, previous: Sequence[Store] = ()
    ) -> None:
        """``routes``: ``(DAG id pattern, store)`` in order; ``None``: the default store.
        ``previous``: stores values were written to before (``previous_store_urls``): read
        and deleted from like the others, never written to."""
        if not routes and not previous:
            raise ConfigError("a routed store needs at least one DAG pattern or previous store")
        self.default = default
        self.routes = tuple((pattern, store or default) for pattern, store in routes)
        self.previous = tuple(previous)
        stores: list[Store] = [default]
        for store in [s for _, s in self.routes] + list(self.previous):
            if all(store is not s for s in stores):
                stores.append(store)
        roots = [s.root_uri for s in stores]
        for a in roots:
            for b in roots:
                if a is not b and (a == b or b.startswith(a + "/")):
                    raise ConfigError(f"DAG stores must not share or nest their roots: {a} and {b}")
        self.stores = tuple(stores)
        self.root_uri = default.root_uri
        self.capabilities = combined_capabilities(self.stores)

    def __repr__(self) -> str:
        return f"RoutedStore({self.default!r}, {list(self.routes)!r})"

    def store_for_dag(self, dag_id: str) -> Store:
        for pattern, store in self.routes:
            if fnmatch.fnmatchcase(dag_id, pattern):
                return store
        return self.default

    def store_for_key(self, key: str) -> Store:
        """The store an object key belongs in (by the DAG at its head; the audit log and other
        ``!`` keys: the default store)."""
        return self.store_for_dag(dag_of(key)) if not key.startswith("!") else self.default

    _store = store_for_key

    def _others(self, key: str) -> list[Store]:
        home = self._store(key)
        return [home] + [s for s in self.stores if s is not home]

    # ----------------------------------------------------------------- writes

    def writer(self, key: str) -> AbstractContextManager[PendingObject]:  # type: ignore[override]
        return self._store(key).writer(key)

    def new_object(self, staged_key: str) -> AbstractContextManager[PendingObject]:
        return self._store(staged_key).new_object(staged_key)

    def delete(self, key: str) -> None:
        """Delete in every store: a value written before its DAG got its own store lives in
        the default one."""
        for store in self._others(key):
            store.delete(key)

    # ------------------------------------------------------------------ reads

    def read_sources(
        self, key: str, *, size_hint: int | None = None, whole: bool = True, prefer: Sequence[str] = ()
    ) -> builtins.list[ReadSource]:
        """The DAG's store's sources, then the other stores' as fallbacks that serve nothing
        (instead of failing) when they lack the object: the DAG's store says it is missing."""
        home, *others = self._others(key)
        sources = list(home.read_sources(key, size_hint=size_hint, whole=whole, prefer=prefer))
        for store in others:
            for source in store.read_sources(key, size_hint=size_hint, whole=whole, prefer=prefer):
                sources.append(
                    dataclasses.replace(source, name=f"{store.root_uri}:{source.name}", open=_or_none(source.open))
                )
        return sources

    def _first(self, key: str, read: str) -> object:
        error: StoreError | None = None
        for store in self._others(key):
            try:
                return getattr(store, read)(key)
            except ObjectMissingError as exc:
                error = error or exc
        assert error is not None
        raise ObjectMissingError("stored object is missing", uri=self.uri_for(key))

    def get(self, key: str) -> bytes:
        return self._first(key, "get")  # type: ignore[return-value]

    def open_reader(self, key: str) -> ObjectReader:
        return self._first(key, "open_reader")  # type: ignore[return-value]

    def head(self, key: str) -> ObjectInfo | None:
        for store in self._others(key):
            info = store.head(key)
            if info is not None:
                return info
        return None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object any of them holds, listed once."""
        return list_once(self.stores, prefix)

    def unfinished_uploads(self) -> Iterator[UnfinishedUpload]:
        return composite.unfinished_uploads(self.stores)

    def remove_unfinished(self, upload: UnfinishedUpload) -> None:
        composite.remove_unfinished(self.stores, upload, self.root_uri)

    # ------------------------------------------------------------------- URIs

    def uri_for(self, key: str) -> str:
        return self._store(key).uri_for(key)

    def key_for(self, uri: str) -> str:
        """The key of a URI in any configured store (roots never nest, so at most one
        matches); anything else is an invalid reference."""
        for store in self.stores:
            if uri.startswith(store.root_uri + "/"):
                return store.key_for(uri)
        raise InvalidReferenceError(
            f"reference points outside the configured stores {[s.root_uri for s in self.stores]}: {uri!r:.300}"
        )

    def close(self) -> None:
        for store in self.stores:
            store.close()


def _or_none(open_: Callable[[], ObjectReader | None]) -> Callable[[], ObjectReader | None]:
    def open_source() -> ObjectReader | None:
        try:
            return open_()
        except ObjectMissingError:
            return None

    return open_source


__all__ = ["RoutedStore"]
