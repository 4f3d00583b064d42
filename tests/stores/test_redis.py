"""RedisStore against a real redis-server: the Store contract (with default and with tiny
chunks), plus what only Redis has to get right: chunking with bounded memory, atomic publish
under concurrent readers, TTL, maxmemory, an unreachable server, the engine, and the Airflow
connection."""

from __future__ import annotations

import pytest

from xcomstash.stores.redis import RedisStore
from xcomstash.testing import StoreContract

pytestmark = pytest.mark.redis


def raw_keys(client, prefix: str) -> list[str]:
    """Every key under the prefix (manifests, chunks, staging markers), by SCAN."""
    return sorted(k.decode() for k in client.scan_iter(match=f"{prefix}/*", count=1000))


@pytest.fixture
def raw_names(redis_client, redis_prefix: str):
    return lambda: raw_keys(redis_client, redis_prefix)


class TestRedisStoreContract(StoreContract):
    @pytest.fixture
    def store(self, redis_client, redis_prefix: str):
        store = RedisStore(redis_client, redis_prefix)
        yield store
        store.close()


class TestRedisStoreSmallChunksContract(StoreContract):
    """Every value above 256 bytes split over 4 KiB chunks: the contract's ranged reads and
    killed writers then cross many chunk keys."""

    @pytest.fixture
    def store(self, redis_client, redis_prefix: str):
        store = RedisStore(redis_client, redis_prefix, chunk_size=4096, inline_max=256)
        yield store
        store.close()
