"""GCSStore against a real fake-gcs-server: the Store contract, plus what only GCS has to get
right (resumable uploads in bounded memory, ranged reads of one generation, conditional
create, error types, the engine on top, the Airflow connection)."""

from __future__ import annotations

import os

import pytest

from xcomstash.stores.gcs import GCSStore
from xcomstash.testing import StoreContract

pytestmark = pytest.mark.gcs

#: Small chunks in most tests: streaming starts after 1 MiB, so big-value paths stay fast.
SMALL_CHUNK = 1024 * 1024


@pytest.fixture
def store(gcs_client, gcs_server, gcs_prefix: str) -> GCSStore:
    return GCSStore(gcs_client, gcs_server.bucket, gcs_prefix)


@pytest.fixture
def raw_names(gcs_client, gcs_server, gcs_prefix: str):
    """Every object in the bucket under the store's prefix (upload sessions are not objects)."""

    def names() -> list[str]:
        return sorted(b.name for b in gcs_client.list_blobs(gcs_server.bucket, prefix=gcs_prefix + "/"))

    return names


class TestGCSStoreContract(StoreContract):
    pass
