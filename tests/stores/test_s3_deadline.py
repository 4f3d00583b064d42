"""A push or pull against a real S3 server that stops answering fails within its deadline."""

from __future__ import annotations

import time

import numpy as np
import pytest

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.errors import StoreTimeoutError
from xcomstash.observe.audit import AuditLog, AuditRecorder, StoreSink

COORD = XComCoordinate("dag", "run", "task", -1, "return_value")
VALUE = np.arange(100_000, dtype=np.float64)


@pytest.mark.s3
def test_a_push_to_a_hung_s3_fails_within_its_deadline_not_the_sum_of_its_timeouts(s3_server, tmp_path) -> None:
    """Real SeaweedFS behind a proxy that takes connections and never answers: botocore's own
    timeouts (3 s read, 3 attempts) would add up to tens of seconds over a push's requests and
    its audit write; the push deadline bounds the whole."""
    from urllib.parse import urlsplit

    from tests.harness.proxy import TcpProxy
    from tests.harness.servers import s3_client
    from xcomstash.stores.s3 import S3Store

    proxy = TcpProxy(urlsplit(s3_server.endpoint_url).port).start()
    try:
        client = s3_client(
            proxy.url, s3_server.access_key, s3_server.secret_key,
            connect_timeout=3, read_timeout=3, retries={"max_attempts": 3, "mode": "standard"},
        )
        store = S3Store(client, s3_server.bucket, f"deadline-{time.time_ns()}")
        sink = StoreSink(store, flush_wait=1.0)
        e = Engine(
            StashConfig(store_url=store.root_uri, threshold=0, read_ahead=False, push_timeout=2, pull_timeout=2),
            store, subscribers=[AuditRecorder(AuditLog([sink]))],
        )
        row = e.serialize(VALUE, COORD)  # the store answers: no effect
        proxy.stall = True
        proxy.drop_all()
        started = time.monotonic()
        with pytest.raises(StoreTimeoutError):
            e.serialize(VALUE * 2, XComCoordinate("dag", "run", "other", -1, "return_value"))
        push_seconds = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(StoreTimeoutError):
            e.deserialize(row, COORD)
        pull_seconds = time.monotonic() - started
        assert push_seconds < 2 + 1 + 2, push_seconds  # deadline + audit wait + scheduling slack
        assert pull_seconds < 2 + 1 + 2, pull_seconds
    finally:
        proxy.normal()
        proxy.stop()
