"""Every store URL form Airflow users write parses to the location it names."""

from __future__ import annotations

import pytest

from xcomstash.errors import ConfigError
from xcomstash.stores import StoreLocation, parse_store_url, store_urls


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("file:///tmp/x", StoreLocation(kind="file", path="/tmp/x")),
        ("s3://b/p/q/", StoreLocation(kind="s3", bucket="b", prefix="p/q")),
        ("s3://my_aws@b", StoreLocation(kind="s3", bucket="b", conn_id="my_aws")),
        ("gs://b/p", StoreLocation(kind="gcs", bucket="b", prefix="p")),
        ("gcs://gconn@b/p", StoreLocation(kind="gcs", bucket="b", prefix="p", conn_id="gconn")),
        ("abfs://c/p", StoreLocation(kind="azure", bucket="c", prefix="p")),
        ("wasb://wconn@c/p", StoreLocation(kind="azure", bucket="c", prefix="p", conn_id="wconn")),
        ("abfss://c@acct.dfs.core.windows.net/p", StoreLocation(kind="azure", bucket="c", prefix="p", account="acct")),
        ("wasbs://c@acct.blob.core.windows.net", StoreLocation(kind="azure", bucket="c", account="acct")),
        ("redis:///xcom", StoreLocation(kind="redis", prefix="xcom")),
        ("redis://rconn@/xcom/a", StoreLocation(kind="redis", prefix="xcom/a", conn_id="rconn")),
    ],
)
def test_url_form_parses_to_its_location(url: str, expected: StoreLocation) -> None:
    parsed = parse_store_url(url)
    assert parsed == StoreLocation(**{**expected.__dict__, "url": url})


def test_redis_url_naming_a_host_says_where_the_host_comes_from() -> None:
    with pytest.raises(ConfigError, match="Airflow Redis connection"):
        parse_store_url("redis://localhost:6379/xcom")


def test_several_urls_are_checked_each() -> None:
    assert store_urls("s3://a/p  gs://b/p") == ["s3://a/p", "gs://b/p"]
    with pytest.raises(ConfigError, match="ftp://x"):
        store_urls("s3://a/p ftp://x")


def test_a_store_whose_client_library_is_missing_names_the_extra_to_install(monkeypatch) -> None:
    import sys

    from xcomstash.stores import open_store

    monkeypatch.setitem(sys.modules, "redis", None)  # as if redis-py were not installed
    monkeypatch.delitem(sys.modules, "xcomstash.stores.redis", raising=False)
    with pytest.raises(ConfigError, match=r"xcomstash\[redis\]"):
        open_store("redis:///xcom")
