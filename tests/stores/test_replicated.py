"""ReplicatedStore: a complete Store over several locations (the contract passes); a push
reaches every location or, below the write quorum, none; a pull through the engine reads
around a location that lost, damaged or cannot serve its copy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.errors import ConfigError, StoreUnavailableError
from xcomstash.stores import FaultyStore, LocalStore, ReplicatedStore
from xcomstash.testing import StoreContract, write

COORD = XComCoordinate("dag", "run_1", "task", -1, "return_value")
VALUE = np.arange(200_000, dtype=np.float64)


def names_under(*roots: Path) -> Callable[[], list[str]]:
    def names() -> list[str]:
        out: set[str] = set()
        for root in roots:
            if root.exists():
                out |= {os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files}
        return sorted(out)

    return names


class TestReplicatedStoreContract(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> ReplicatedStore:
        return ReplicatedStore([LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")])

    @pytest.fixture
    def raw_names(self, tmp_path: Path) -> Callable[[], list[str]]:
        return names_under(tmp_path / "a", tmp_path / "b")


def test_a_write_reaches_every_location(tmp_path) -> None:
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    write(ReplicatedStore([a, b]), "x/y.xcs", b"payload")
    assert a.get("x/y.xcs") == b.get("x/y.xcs") == b"payload"


def test_below_the_write_quorum_nothing_is_left_anywhere(tmp_path) -> None:
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    store = ReplicatedStore([a, FaultyStore(b, fail_writes=True)])  # quorum: all
    with pytest.raises(StoreUnavailableError, match="1 of 2 locations"):
        write(store, "x/y.xcs", b"payload")
    assert a.head("x/y.xcs") is None and b.head("x/y.xcs") is None
    assert names_under(tmp_path / "a", tmp_path / "b")() == []  # no staging files either


def test_at_the_write_quorum_a_push_succeeds_with_one_location_down(tmp_path) -> None:
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    store = ReplicatedStore([FaultyStore(a, fail_writes=True), b], write_quorum=1)
    write(store, "x/y.xcs", b"payload")
    assert a.head("x/y.xcs") is None and b.get("x/y.xcs") == b"payload"
    assert store.get("x/y.xcs") == b"payload"  # read from the location that has it


def engine_over(store: ReplicatedStore) -> Engine:
    config = StashConfig(store_url=store.root_uri, threshold=0, read_ahead=False, cache_dir=None)
    return Engine(config, store)


@pytest.mark.parametrize("damage", ["deleted", "corrupted", "truncated"])
def test_a_pull_reads_around_a_location_whose_copy_is_lost_or_damaged(tmp_path, damage) -> None:
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    engine = engine_over(ReplicatedStore([a, b]))
    row = engine.serialize(VALUE, COORD)
    path = Path(a.root) / a.key_for(row["uri"])
    if damage == "deleted":
        path.unlink()
    elif damage == "corrupted":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 1
        path.write_bytes(bytes(data))
    else:
        os.truncate(path, path.stat().st_size // 2)
    assert np.array_equal(engine.deserialize(row, COORD), VALUE)


def test_a_pull_reads_around_an_unreachable_location(tmp_path) -> None:
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    row = engine_over(ReplicatedStore([a, b])).serialize(VALUE, COORD)
    down_first = engine_over(ReplicatedStore([FaultyStore(a, fail_reads=True), b]))
    assert np.array_equal(down_first.deserialize(row, COORD), VALUE)


def test_a_value_damaged_in_every_location_is_an_error_never_a_value(tmp_path) -> None:
    from xcomstash.errors import IntegrityError

    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    engine = engine_over(ReplicatedStore([a, b]))
    row = engine.serialize(VALUE, COORD)
    for loc in (a, b):
        path = Path(loc.root) / a.key_for(row["uri"])  # the same key in every location
        data = bytearray(path.read_bytes())
        data[-10] ^= 1
        path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        engine.deserialize(row, COORD)


def test_bad_settings_are_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="at least two"):
        ReplicatedStore([LocalStore(tmp_path / "a")])
    with pytest.raises(ConfigError, match="write_quorum"):
        ReplicatedStore([LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")], write_quorum=3)


def test_two_locations_with_one_root_uri_are_refused(tmp_path) -> None:
    # The same bucket and prefix behind two endpoints would look like this: references record
    # holders by root URI, so such twins could not be told apart.
    with pytest.raises(ConfigError, match="more than once"):
        ReplicatedStore([LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b"), LocalStore(tmp_path / "a")])
    with pytest.raises(ConfigError, match="more than once"):
        Engine(StashConfig(store_url=f"file://{tmp_path / 'a'} file://{tmp_path / 'a'}"))


def test_a_store_url_naming_several_locations_replicates_every_value(tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    engine = Engine(StashConfig(store_url=f"file://{a} file://{b}", threshold=0, read_ahead=False))
    assert isinstance(engine.store, ReplicatedStore) and engine.store.write_quorum == 2
    row = engine.serialize(VALUE, COORD)
    key = LocalStore(a).key_for(row["uri"])  # references name the first location
    assert (a / key).exists() and (b / key).exists()
    (a / key).unlink()
    assert np.array_equal(engine.deserialize(row, COORD), VALUE)


def test_write_quorum_must_fit_the_locations_in_the_store_url(tmp_path) -> None:
    with pytest.raises(ConfigError, match="write_quorum must be 1..2"):
        StashConfig(store_url=f"file://{tmp_path / 'a'} file://{tmp_path / 'b'}", write_quorum=3)
    with pytest.raises(ConfigError, match="write_quorum must be 1..1"):
        StashConfig(store_url=f"file://{tmp_path / 'a'}", write_quorum=2)
    with pytest.raises(ConfigError, match="unsupported store URL"):
        StashConfig(store_url=f"file://{tmp_path / 'a'} ftp://x/y")


# --------------------------------------------------- locations in the reference, failover events


class Events:
    """A subscriber keeping every event (pushes and pulls of stored values)."""

    wants_inline = False

    def __init__(self) -> None:
        self.seen: list = []

    def __call__(self, event) -> None:
        self.seen.append(event)

    def flush(self) -> None:
        pass

    def last(self, op: str):
        return [e for e in self.seen if e.op == op][-1]


def test_the_reference_names_every_location_that_took_the_value(tmp_path) -> None:
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    row = engine_over(ReplicatedStore([a, b])).serialize(VALUE, COORD)
    assert row["locations"] == [a.root_uri, b.root_uri]


def test_a_push_at_quorum_names_only_the_locations_that_hold_the_value(tmp_path) -> None:
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    store = ReplicatedStore([FaultyStore(a, fail_writes=True), b], write_quorum=1)
    row = engine_over(store).serialize(VALUE, COORD)
    assert row["locations"] == [b.root_uri]
    assert a.head(a.key_for(row["uri"])) is None


def test_a_pull_tries_the_locations_the_reference_names_first(tmp_path) -> None:
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    row = engine_over(ReplicatedStore([FaultyStore(a, fail_writes=True), b], write_quorum=1)).serialize(VALUE, COORD)
    watched_a = FaultyStore(a)
    events = Events()
    reader = Engine(StashConfig(store_url=a.root_uri, threshold=0, read_ahead=False), ReplicatedStore([watched_a, b]), subscribers=[events])
    assert np.array_equal(reader.deserialize(row, COORD), VALUE)
    assert watched_a.bytes_read == 0, "the location the reference does not name was read first"
    assert events.last("pull").source == "replica:1" and events.last("pull").failover == ()


def test_a_failover_is_recorded_in_the_pull_event_audit_and_trace(tmp_path) -> None:
    import json

    from xcomstash.observe.audit import AuditLog, AuditRecorder

    class Kept:
        def __init__(self) -> None:
            self.events: list = []

        def write(self, event) -> None:
            self.events.append(event)

        def flush(self) -> None:
            pass

    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    events, audited = Events(), Kept()
    trace = tmp_path / "trace.jsonl"
    engine = Engine(
        StashConfig(store_url=a.root_uri, threshold=0, read_ahead=False),
        ReplicatedStore([a, b]), subscribers=[events, AuditRecorder(AuditLog([audited]))], trace_file=str(trace),
    )
    row = engine.serialize(VALUE, COORD)
    (Path(a.root) / a.key_for(row["uri"])).unlink()
    assert np.array_equal(engine.deserialize(row, COORD), VALUE)
    pull = events.last("pull")
    assert pull.source == "replica:1"
    assert pull.failover == ("replica:0: ObjectMissingError",)
    traced = [json.loads(line) for line in trace.read_text().splitlines()]
    assert traced[-1]["extra"]["failover"] == ["replica:0: ObjectMissingError"]
    audit = json.loads([e for e in audited.events if e.op == "pull"][-1].to_json())
    assert audit["source"] == "replica:1" and audit["failover"] == ["replica:0: ObjectMissingError"]


def test_read_order_reads_the_named_location_first(tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    events = Events()
    engine = Engine(
        StashConfig(store_url=f"file://{a} file://{b}", threshold=0, read_ahead=False, read_order=(1, 0)),
        subscribers=[events],
    )
    assert engine.store.read_order == (1, 0)
    row = engine.serialize(VALUE, COORD)
    assert np.array_equal(engine.deserialize(row, COORD), VALUE)
    assert events.last("pull").source == "replica:1"
    with pytest.raises(ConfigError, match="read_order"):
        StashConfig(store_url=f"file://{a} file://{b}", read_order=(0, 0))
