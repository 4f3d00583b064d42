"""Store URLs: what a ``store_url`` may say, parsed into a :class:`StoreLocation`.

One place knows every form, so the engine, the Airflow adapter and the maintenance commands
agree on what a URL means. The forms are the ones Airflow users already write for
``ObjectStoragePath`` (common.io's object-storage backend), with the Airflow connection id as
the URL's user part:

- ``file:///absolute/path``
- ``s3://[conn_id@]bucket/prefix``
- ``gs://[conn_id@]bucket/prefix`` (also ``gcs://``)
- ``abfs://[conn_id@]container/prefix`` (also ``abfss://``, ``wasb://``, ``wasbs://``, ``az://``),
  or adlfs's ``abfs://container@account.dfs.core.windows.net/prefix``
- ``redis://[conn_id@]/prefix`` (host, port, password and TLS come from the connection)
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from xcomstash.errors import ConfigError

__all__ = ["StoreLocation", "parse_store_url", "store_urls", "URL_FORMS"]

#: The forms, for error messages and ``--help``.
URL_FORMS = (
    "file:///path, s3://[conn_id@]bucket/prefix, gs://[conn_id@]bucket/prefix, "
    "abfs://[conn_id@]container/prefix (or wasb://), redis://[conn_id@]/prefix"
)

_AZURE_SCHEMES = {"abfs", "abfss", "wasb", "wasbs", "az", "azure"}
_AZURE_HOST_SUFFIXES = (".blob.core.windows.net", ".dfs.core.windows.net")


@dataclass(frozen=True)
class StoreLocation:
    """A parsed store URL.

    ``kind`` is the store that serves it (``file``, ``s3``, ``gcs``, ``azure``, ``redis``);
    ``bucket`` is the bucket or container; ``account`` an Azure storage account named in the
    URL itself (adlfs form), else empty; ``conn_id`` the Airflow connection named in the URL
    (``None``: the kind's default connection).
    """

    kind: str
    bucket: str = ""
    prefix: str = ""
    path: str = ""
    conn_id: str | None = None
    account: str = ""
    url: str = ""

    @property
    def scheme(self) -> str:
        """Kept for callers that compared schemes before every kind had one name."""
        return self.kind


def parse_store_url(url: str) -> StoreLocation:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"file store URL must be file:///absolute/path, got {url!r}")
        if not parts.path.startswith("/"):
            raise ConfigError(f"file store URL needs an absolute path, got {url!r}")
        return StoreLocation(kind="file", path=parts.path, url=url)
    conn_id, _, host = parts.netloc.rpartition("@")
    prefix = parts.path.strip("/")
    if scheme == "s3":
        if not host:
            raise ConfigError(f"s3 store URL needs a bucket: s3://[conn_id@]bucket/prefix, got {url!r}")
        return StoreLocation(kind="s3", bucket=host, prefix=prefix, conn_id=conn_id or None, url=url)
    if scheme in ("gs", "gcs"):
        if not host:
            raise ConfigError(f"GCS store URL needs a bucket: gs://[conn_id@]bucket/prefix, got {url!r}")
        return StoreLocation(kind="gcs", bucket=host, prefix=prefix, conn_id=conn_id or None, url=url)
    if scheme in _AZURE_SCHEMES:
        if host.lower().endswith(_AZURE_HOST_SUFFIXES):
            # adlfs form: the user part is the container, the host names the account.
            if not conn_id:
                raise ConfigError(
                    f"Azure store URL {url!r} names an account but no container: "
                    "abfs://container@account.dfs.core.windows.net/prefix"
                )
            return StoreLocation(
                kind="azure", bucket=conn_id, prefix=prefix, account=host.split(".", 1)[0], url=url
            )
        if not host:
            raise ConfigError(
                f"Azure store URL needs a container: abfs://[conn_id@]container/prefix, got {url!r}"
            )
        return StoreLocation(kind="azure", bucket=host, prefix=prefix, conn_id=conn_id or None, url=url)
    if scheme in ("redis", "rediss"):
        if host:
            raise ConfigError(
                f"Redis store URL {url!r} names a host: write redis://[conn_id@]/prefix; host, port, "
                "password and TLS come from the Airflow Redis connection"
            )
        return StoreLocation(kind="redis", prefix=prefix, conn_id=conn_id or None, url=url)
    raise ConfigError(f"unsupported store URL {url!r}: use {URL_FORMS}")


def store_urls(url: str) -> list[str]:
    """The locations a ``store_url`` names: one URL, or several separated by whitespace (a
    replicated store; the first is the one references name)."""
    urls = url.split()
    if not urls:
        raise ConfigError("store_url is empty")
    for one in urls:
        parse_store_url(one)
    return urls
