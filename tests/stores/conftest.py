"""Fixtures for store tests: one real SeaweedFS S3 server per session, started on first use."""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from tests.harness.servers import S3Server, start_seaweedfs


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
