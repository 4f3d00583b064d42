"""A replicated store over two real services, S3 (SeaweedFS) and GCS (fake-gcs-server): the
store contract holds, and the faults a real deployment sees are read or written around:
a location stopped during pushes (below and above the write quorum), a corrupted copy in one
location and a deleted copy in the other, a location that accepts connections and never
answers."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from tests.harness.gcs_server import emulator_client, start_fake_gcs
from tests.harness.proxy import TcpProxy
from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.errors import StoreUnavailableError
from xcomstash.stores import ReplicatedStore
from xcomstash.stores.gcs import GCSStore
from xcomstash.stores.s3 import S3Store
from xcomstash.testing import StoreContract

pytestmark = [pytest.mark.s3, pytest.mark.gcs]

VALUE = np.arange(400_000, dtype=np.float64)


def coordinate(task: str = "t") -> XComCoordinate:
    return XComCoordinate("dag", "run", task, -1, "return_value")


def s3_names(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="xcom", Prefix=prefix + "/")
    return sorted(o["Key"][len(prefix) + 1 :] for page in pages for o in page.get("Contents", []))


def gcs_names(client, prefix: str) -> list[str]:
    return sorted(b.name[len(prefix) + 1 :] for b in client.list_blobs("xcom", prefix=prefix + "/"))


class TestReplicatedOverS3AndGCS(StoreContract):
    @pytest.fixture
    def store(self, s3_client, gcs_client, s3_prefix: str) -> ReplicatedStore:
        return ReplicatedStore([S3Store(s3_client, "xcom", s3_prefix), GCSStore(gcs_client, "xcom", s3_prefix)])

    @pytest.fixture
    def raw_names(self, s3_client, gcs_client, s3_prefix: str) -> Callable[[], list[str]]:
        return lambda: sorted(set(s3_names(s3_client, s3_prefix)) | set(gcs_names(gcs_client, s3_prefix)))


@pytest.fixture
def own_gcs(tmp_path: Path):
    """A fake-gcs-server of this test's own, to stop or stall."""
    server = start_fake_gcs(tmp_path / "gcs")
    yield server
    server.stop()


class Pulls:
    """Keeps the pull events (which source served, which failed first)."""

    wants_inline = False

    def __init__(self) -> None:
        self.events: list = []

    def __call__(self, event) -> None:
        if event.op == "pull":
            self.events.append(event)

    def flush(self) -> None:
        pass


def engine_over(store: ReplicatedStore, pulls: Pulls | None = None) -> Engine:
    config = StashConfig(store_url=store.root_uri, threshold=0, read_ahead=False, cache_dir=None)
    return Engine(config, store, subscribers=[pulls] if pulls else [])


def test_a_location_stopped_during_pushes_fails_them_below_quorum_and_not_above(s3_client, own_gcs) -> None:
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    s3 = S3Store(s3_client, "xcom", prefix)

    def gcs() -> GCSStore:
        return GCSStore(own_gcs.client(), "xcom", prefix, timeout=2, retry_timeout=0.5)

    all_of_them = engine_over(ReplicatedStore([s3, gcs()]))
    one_is_enough = engine_over(ReplicatedStore([s3, gcs()], write_quorum=1))
    before = all_of_them.serialize(VALUE, coordinate("before"))
    own_gcs.stop()
    with pytest.raises(StoreUnavailableError, match="write_quorum is 2"):
        all_of_them.serialize(VALUE + 1, coordinate("below"))
    assert not any("below" in name for name in s3_names(s3_client, prefix)), "a push below quorum left a copy"
    row = one_is_enough.serialize(VALUE + 2, coordinate("above"))
    assert row["locations"] == [s3.root_uri]
    # Reads go on from the location that holds each value.
    assert np.array_equal(one_is_enough.deserialize(before, coordinate("before")), VALUE)
    assert np.array_equal(one_is_enough.deserialize(row, coordinate("above")), VALUE + 2)


def test_a_corrupted_copy_and_a_deleted_copy_are_read_from_the_other_location(s3_client, gcs_client) -> None:
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    s3, gcs = S3Store(s3_client, "xcom", prefix), GCSStore(gcs_client, "xcom", prefix)
    engine = engine_over(ReplicatedStore([s3, gcs]))
    corrupted = engine.serialize(VALUE, coordinate("corrupted"))
    deleted = engine.serialize(VALUE * 3, coordinate("deleted"))
    key = s3.key_for(corrupted["uri"])
    data = bytearray(s3.get(key))
    data[len(data) // 2] ^= 0xFF
    s3_client.put_object(Bucket="xcom", Key=f"{prefix}/{key}", Body=bytes(data))
    gcs.delete(s3.key_for(deleted["uri"]))
    pulls = Pulls()
    s3_first = engine_over(ReplicatedStore([s3, gcs]), pulls)
    assert np.array_equal(s3_first.deserialize(corrupted, coordinate("corrupted")), VALUE)
    gcs_first = engine_over(ReplicatedStore([s3, gcs], read_order=[1, 0]), pulls)
    assert np.array_equal(gcs_first.deserialize(deleted, coordinate("deleted")), VALUE * 3)
    assert [(e.source, e.failover) for e in pulls.events] == [
        ("replica:1", ("replica:0: IntegrityError",)),
        ("replica:0", ("replica:1: ObjectMissingError",)),
    ]


def test_a_hung_location_is_written_and_read_around(s3_client, own_gcs) -> None:
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    proxy = TcpProxy(own_gcs.port).start()
    try:
        s3 = S3Store(s3_client, "xcom", prefix)
        gcs = GCSStore(emulator_client(proxy.url), "xcom", prefix, timeout=1, retry_timeout=1)
        # GCS first in read order: a hung first location must not stop the pull.
        store = ReplicatedStore([s3, gcs], write_quorum=1, read_order=[1, 0])
        pulls = Pulls()
        engine = engine_over(store, pulls)
        before = engine.serialize(VALUE, coordinate("before"))
        proxy.stall = True
        proxy.drop_all()
        started = time.monotonic()
        row = engine.serialize(VALUE + 5, coordinate("during"))
        assert row["locations"] == [s3.root_uri]
        assert np.array_equal(engine.deserialize(before, coordinate("before")), VALUE)
        assert np.array_equal(engine.deserialize(row, coordinate("during")), VALUE + 5)
        assert time.monotonic() - started < 30
        assert [e.source for e in pulls.events] == ["replica:0", "replica:0"]
        # The value pushed before the hang names both locations: GCS (first in read order)
        # is tried and fails over; the one pushed during it names S3 only: read there first.
        assert pulls.events[0].failover[0].startswith("replica:1: ")
        assert pulls.events[1].failover == ()
    finally:
        proxy.normal()
        proxy.stop()
