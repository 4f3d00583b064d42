"""Object stores behind one small interface, and :func:`open_store` to pick one by URL.

A store is :class:`Store` (streamed write with atomic publish, ranged read, head, delete, list)
plus :class:`Capabilities`; everything else composes around one: :class:`CachingStore` (a
local read cache), :class:`FaultyStore` (fault injection), all built on :class:`WrapperStore`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from xcomstash.errors import ConfigError
from xcomstash.stores.base import (
    Capabilities,
    ObjectInfo,
    ObjectReader,
    PendingObject,
    ReadSource,
    Store,
    UnfinishedUpload,
)
from xcomstash.stores.caching import CachingStore
from xcomstash.stores.faulty import FaultyStore
from xcomstash.stores.locations import URL_FORMS, StoreLocation, parse_store_url, store_urls
from xcomstash.stores.local import LocalStore
from xcomstash.stores.replicated import ReplicatedStore
from xcomstash.stores.routed import RoutedStore
from xcomstash.stores.wrapper import WrapperStore

__all__ = [
    "CachingStore",
    "ClientFactory",
    "URL_FORMS",
    "Capabilities",
    "DEFAULT_CACHE_MAX_BYTES",
    "FaultyStore",
    "LocalStore",
    "ObjectInfo",
    "ObjectReader",
    "PendingObject",
    "ReadSource",
    "ReplicatedStore",
    "RoutedStore",
    "Store",
    "StoreLocation",
    "UnfinishedUpload",
    "WrapperStore",
    "open_store",
    "with_cache",
    "parse_store_url",
    "store_urls",
]

#: The read cache bound when none is given (the same default as ``StashConfig.cache_max_bytes``).
DEFAULT_CACHE_MAX_BYTES = 2 * 1024**3


#: Builds the service client for a location (a boto3 S3 client, a google-cloud-storage
#: ``Client``, an azure ``BlobServiceClient``, a ``redis.Redis``). The Airflow adapter passes
#: one that reads Airflow connections; ``None`` returns the kind's default client (the SDK's
#: own credential chain).
ClientFactory = Callable[[StoreLocation], Any]

#: Which module opens each kind of location (imported on first use: an installation that only
#: uses S3 never needs the Google or Azure SDKs). Each module has
#: ``open_location(location, client) -> Store``.
_OPENERS = {
    "s3": "xcomstash.stores.s3",
    "gcs": "xcomstash.stores.gcs",
    "azure": "xcomstash.stores.azure",
    "redis": "xcomstash.stores.redis",
}

#: The package that provides each kind's client library (for the error when it is missing).
_EXTRAS = {"s3": "s3", "gcs": "gcs", "azure": "azure", "redis": "redis"}


def open_store(
    url: str,
    *,
    clients: ClientFactory | None = None,
    cache_dir: str | None = None,
    cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES,
    write_quorum: int | None = None,
    read_order: Sequence[int] | None = None,
    dag_stores: Sequence[tuple[str, str | None]] = (),
    previous: Sequence[str] = (),
) -> Store:
    """Open the store a URL names; ``clients`` builds each remote location's service client
    (the Airflow adapter passes one that reads Airflow connections). Several URLs: a
    :class:`ReplicatedStore` over them, a push succeeding once ``write_quorum`` (default all)
    of them hold the object.

    With ``cache_dir``, a remote store comes wrapped in a :class:`CachingStore` bounded to
    ``cache_max_bytes``; a local store never does (a cached copy would cost what a read costs).

    ``previous``: URLs of stores values were written to before ``url`` (read, never written).
    """
    store = _open_locations(url, clients, write_quorum, read_order)
    if dag_stores or previous:
        # write_quorum and read_order are positions in store_url: other stores take the defaults.
        store = RoutedStore(
            store,
            [(pattern, _open_locations(u, clients, None, None) if u else None) for pattern, u in dag_stores],
            previous=[_open_locations(u, clients, None, None) for u in previous],
        )
    return with_cache(store, cache_dir, cache_max_bytes)


def _open_locations(
    url: str, clients: ClientFactory | None, write_quorum: int | None, read_order: Sequence[int] | None
) -> Store:
    urls = store_urls(url)
    if len(urls) == 1:
        return _open_bare(urls[0], clients)
    return ReplicatedStore([_open_bare(u, clients) for u in urls], write_quorum=write_quorum, read_order=read_order)


def with_cache(store: Store, cache_dir: str | None, cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES) -> Store:
    """``store`` behind the local read cache, when a cache directory is given and the store is
    remote (and not already cached)."""
    if not cache_dir or store.capabilities.local or isinstance(store, CachingStore):
        return store
    return CachingStore(store, cache_dir, cache_max_bytes)


def _open_bare(url: str, clients: ClientFactory | None) -> Store:
    location = parse_store_url(url)
    if location.kind == "file":
        return LocalStore(location.path)
    import importlib

    try:
        module = importlib.import_module(_OPENERS[location.kind])
        client = clients(location) if clients is not None else None
        return module.open_location(location, client)
    except ImportError as exc:  # the service's client library is not installed
        raise ConfigError(
            f"store URL {url!r} needs the {exc.name or 'client'} package: "
            f"pip install 'xcomstash[{_EXTRAS[location.kind]}]'"
        ) from None
