"""Object stores behind one small interface, and :func:`open_store` to pick one by URL."""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urlsplit

from xcomstash.errors import ConfigError
from xcomstash.stores.base import ObjectInfo, Store
from xcomstash.stores.local import LocalStore

__all__ = ["LocalStore", "ObjectInfo", "Store", "StoreLocation", "open_store", "parse_store_url"]

from dataclasses import dataclass


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


def open_store(url: str, *, s3_client_factory: Callable[[str | None], Any] | None = None) -> Store:
    """Open the store a URL names. S3 needs a client factory taking the connection id
    (the Airflow adapter passes one that reads Airflow connections)."""
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
