"""Object stores behind one small interface, and :func:`open_store` to pick one by URL.

A store is :class:`Store` (streamed write with atomic publish, ranged read, head, delete, list)
plus :class:`Capabilities`; everything else composes around one: :class:`CachingStore` (a
local read cache), :class:`FaultyStore` (fault injection), all built on :class:`WrapperStore`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from xcomstash.errors import ConfigError
from xcomstash.stores.base import (
    Capabilities,
    ObjectInfo,
    ObjectReader,
    PendingObject,
    ReadSource,
    Store,
)
from xcomstash.stores.caching import CachingStore
from xcomstash.stores.faulty import FaultyStore
from xcomstash.stores.local import LocalStore
from xcomstash.stores.replicated import ReplicatedStore
from xcomstash.stores.wrapper import WrapperStore

__all__ = [
    "CachingStore",
    "Capabilities",
    "DEFAULT_CACHE_MAX_BYTES",
    "FaultyStore",
    "LocalStore",
    "ObjectInfo",
    "ObjectReader",
    "PendingObject",
    "ReadSource",
    "ReplicatedStore",
    "Store",
    "StoreLocation",
    "WrapperStore",
    "open_store",
    "with_cache",
    "parse_store_url",
    "store_urls",
]

#: The read cache bound when none is given (the same default as ``StashConfig.cache_max_bytes``).
DEFAULT_CACHE_MAX_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class StoreLocation:
    """A parsed store URL: ``file:///path`` or ``s3://[conn_id@]bucket/prefix``."""

    scheme: str
    bucket: str = ""
    prefix: str = ""
    path: str = ""
    conn_id: str | None = None


def parse_store_url(url: str) -> StoreLocation:
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"file store URL must be file:///absolute/path, got {url!r}")
        if not parts.path.startswith("/"):
            raise ConfigError(f"file store URL needs an absolute path, got {url!r}")
        return StoreLocation(scheme="file", path=parts.path)
    if parts.scheme == "s3":
        conn_id, _, bucket = parts.netloc.rpartition("@")
        if not bucket:
            raise ConfigError(f"s3 store URL needs a bucket: s3://[conn_id@]bucket/prefix, got {url!r}")
        return StoreLocation(
            scheme="s3", bucket=bucket, prefix=parts.path.strip("/"), conn_id=conn_id or None
        )
    raise ConfigError(
        f"unsupported store URL {url!r}: use file:///path or s3://[conn_id@]bucket/prefix"
    )


def store_urls(url: str) -> list[str]:
    """The locations a ``store_url`` names: one URL, or several separated by whitespace (a
    replicated store; the first is the one references name)."""
    urls = url.split()
    if not urls:
        raise ConfigError("store_url is empty")
    for one in urls:
        parse_store_url(one)
    return urls


def open_store(
    url: str,
    *,
    s3_client_factory: Callable[[str | None], Any] | None = None,
    cache_dir: str | None = None,
    cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES,
    write_quorum: int | None = None,
) -> Store:
    """Open the store a URL names. S3 needs a client factory taking the connection id
    (the Airflow adapter passes one that reads Airflow connections). Several URLs: a
    :class:`ReplicatedStore` over them, a push succeeding once ``write_quorum`` (default all)
    of them hold the object.

    With ``cache_dir``, a remote store comes wrapped in a :class:`CachingStore` bounded to
    ``cache_max_bytes``; a local store never does (a cached copy would cost what a read costs).
    """
    urls = store_urls(url)
    if len(urls) == 1:
        store = _open_bare(urls[0], s3_client_factory)
    else:
        store = ReplicatedStore([_open_bare(u, s3_client_factory) for u in urls], write_quorum=write_quorum)
    return with_cache(store, cache_dir, cache_max_bytes)


def with_cache(store: Store, cache_dir: str | None, cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES) -> Store:
    """``store`` behind the local read cache, when a cache directory is given and the store is
    remote (and not already cached)."""
    if not cache_dir or store.capabilities.local or isinstance(store, CachingStore):
        return store
    return CachingStore(store, cache_dir, cache_max_bytes)


def _open_bare(url: str, s3_client_factory: Callable[[str | None], Any] | None) -> Store:
    location = parse_store_url(url)
    if location.scheme == "file":
        return LocalStore(location.path)
    from xcomstash.stores.s3 import S3Store

    if s3_client_factory is None:
        import boto3

        client = boto3.client("s3")
    else:
        client = s3_client_factory(location.conn_id)
    return S3Store(client, location.bucket, location.prefix)
