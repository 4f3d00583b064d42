"""What each remote store says about its transport and its clock (``Store.endpoint`` and
``Store.server_time``, read by ``xcomstash check``), against the real servers of the store
tests: SeaweedFS (S3), fake-gcs-server, Azurite and redis-server, all on 127.0.0.1."""

from __future__ import annotations

import time

import pytest

from xcomstash.maintenance.check import probe
from xcomstash.stores import LocalStore, WrapperStore
from xcomstash.stores.azure import AzureBlobStore
from xcomstash.stores.gcs import GCSStore
from xcomstash.stores.redis import RedisStore
from xcomstash.stores.s3 import S3Store

def assert_clock_and_probe(store, endpoint: str) -> None:
    assert store.endpoint() == endpoint
    before = time.time()
    server = store.server_time()
    after = time.time()
    # Date headers have whole seconds; Redis TIME microseconds.
    assert server is not None and before - 1.5 <= server <= after + 1.5
    probe(store)
    assert list(store.list()) == []


@pytest.mark.s3
def test_s3_reports_its_endpoint_and_date_header(s3_server, s3_client, s3_prefix) -> None:
    store = S3Store(s3_client, s3_server.bucket, s3_prefix)
    assert_clock_and_probe(store, s3_server.endpoint_url)
    # A wrapper answers for the store it wraps.
    assert WrapperStore(store).endpoint() == s3_server.endpoint_url


@pytest.mark.gcs
def test_gcs_reports_its_endpoint_and_date_header(gcs_server, gcs_client, gcs_prefix) -> None:
    assert_clock_and_probe(GCSStore(gcs_client, gcs_server.bucket, gcs_prefix), gcs_server.endpoint)


@pytest.mark.azure
def test_azure_reports_its_container_url_and_date_header(azurite, azure_client, azure_prefix) -> None:
    store = AzureBlobStore(azure_client.get_container_client(azurite.container), azure_prefix)
    try:
        assert_clock_and_probe(store, f"{azurite.account_url}/{azurite.container}")
    finally:
        store.close()


@pytest.mark.redis
def test_redis_reports_host_port_and_time(redis_server, redis_client, redis_prefix) -> None:
    store = RedisStore(redis_client, redis_prefix)
    try:
        assert_clock_and_probe(store, f"redis://127.0.0.1:{redis_server.port}")
    finally:
        store.close()


def test_a_local_store_has_neither(tmp_path) -> None:
    store = LocalStore(tmp_path)
    assert store.endpoint() is None and store.server_time() is None
