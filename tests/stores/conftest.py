"""Fixtures for store tests: one real SeaweedFS S3 server and one Redis per session, each
started on first use."""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from tests.harness.servers import RedisServer, S3Server, start_redis, start_seaweedfs


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_client(s3_server: S3Server):
    """A boto3 S3 client with the server's (valid) credentials, path-style addressing."""
    return s3_server.client()


@pytest.fixture
def s3_prefix() -> str:
    """A prefix no other test uses, so tests can share the session's bucket."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_client(redis_server: RedisServer):
    """A redis-py client of the session's server (bytes in and out, timeouts set)."""
    from xcomstash.stores.redis import default_client

    client = default_client(redis_server.url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test uses, so tests can share the session's Redis."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory):
    """One fake-gcs-server (in memory, bucket "xcom") per session, started on first use."""
    from tests.harness.gcs_server import start_fake_gcs

    server = start_fake_gcs(tmp_path_factory.mktemp("fake-gcs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def gcs_client(gcs_server):
    """A google-cloud-storage client against the session's fake-gcs-server (anonymous)."""
    return gcs_server.client()


@pytest.fixture
def gcs_prefix() -> str:
    """A prefix no other test uses, so tests can share the session's bucket."""
    return f"t-{uuid.uuid4().hex[:12]}"


# ------------------------------------------------------------------ Azure Blob Storage (Azurite)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory):
    """One in-memory Azurite per session with a container ``xcom``; tests use fresh prefixes."""
    from tests.harness.azurite_server import start_azurite

    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def azure_client(azurite):
    """A ``BlobServiceClient`` for Azurite with short timeouts and one quick retry."""
    return azurite.client()


@pytest.fixture
def azure_prefix() -> str:
    """A prefix no other test uses, so tests can share the session's container."""
    return f"t-{uuid.uuid4().hex[:12]}"
