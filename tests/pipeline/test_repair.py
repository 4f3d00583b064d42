"""Repair: a replicated store's missing and damaged copies are rewritten from a copy that
verifies, only for references that pass the pull checks against their rows, and audited."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.security.crypto.keyset import KeyRing, Keyset
from xcomstash.security.guard import Guard, SecurityConfig
from xcomstash.stores import FaultyStore, LocalStore, ReplicatedStore

COORD = XComCoordinate("dag", "run_1", "task", -1, "return_value")
OTHER = XComCoordinate("dag", "run_1", "other", -1, "return_value")
VALUE = np.arange(300_000, dtype=np.float64)


class Events:
    wants_inline = False

    def __init__(self) -> None:
        self.seen: list = []

    def __call__(self, event) -> None:
        self.seen.append(event)

    def flush(self) -> None:
        pass


def engine(store, *, events=None, guard=None) -> Engine:
    config = StashConfig(store_url=store.root_uri, threshold=0, read_ahead=False, cache_dir=None)
    return Engine(config, store, subscribers=[events] if events else [], guard=guard)


def object_path(location: LocalStore, row: dict) -> Path:
    return Path(location.root) / location.key_for(row["uri"])


@pytest.fixture
def two(tmp_path) -> tuple[LocalStore, LocalStore]:
    return LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")


@pytest.mark.parametrize("damage", ["deleted", "corrupted", "never written"])
def test_repair_rewrites_the_copy_a_location_lacks_or_damaged(two, damage) -> None:
    a, b = two
    if damage == "never written":
        row = engine(ReplicatedStore([a, FaultyStore(b, fail_writes=True)], write_quorum=1)).serialize(VALUE, COORD)
    else:
        row = engine(ReplicatedStore([a, b])).serialize(VALUE, COORD)
    path_b = Path(b.root) / a.key_for(row["uri"])
    if damage == "deleted":
        path_b.unlink()
    elif damage == "corrupted":
        data = bytearray(path_b.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path_b.write_bytes(bytes(data))
    events = Events()
    result = engine(ReplicatedStore([a, b]), events=events).repair_rows([(row, COORD)])
    assert (result.repaired, result.copies, result.complete) == (1, 1, True)
    assert path_b.read_bytes() == object_path(a, row).read_bytes()
    # With the first location down, the repaired location alone serves the value.
    a_down = engine(ReplicatedStore([FaultyStore(a, fail_reads=True), b]))
    assert np.array_equal(a_down.deserialize(row, COORD), VALUE)
    repairs = [e for e in events.seen if e.op == "repair"]
    assert len(repairs) == 1 and repairs[0].outcome == "ok" and repairs[0].extra["copied_to"] == [b.root_uri]


def test_repair_of_healthy_copies_copies_nothing(two) -> None:
    a, b = two
    row = engine(ReplicatedStore([a, b])).serialize(VALUE, COORD)
    before = object_path(a, row).stat().st_mtime_ns
    result = engine(ReplicatedStore([a, b])).repair_rows([(row, COORD)])
    assert (result.healthy, result.repaired, result.copies) == (1, 0, 0)
    assert object_path(a, row).stat().st_mtime_ns == before


def test_repair_never_copies_from_a_damaged_copy(two) -> None:
    a, b = two
    row = engine(ReplicatedStore([a, b])).serialize(VALUE, COORD)
    for loc in (a, b):
        path = Path(loc.root) / a.key_for(row["uri"])
        data = bytearray(path.read_bytes())
        data[-20] ^= 1
        path.write_bytes(bytes(data))
    damaged = {loc: (Path(loc.root) / a.key_for(row["uri"])).read_bytes() for loc in (a, b)}
    result = engine(ReplicatedStore([a, b])).repair_rows([(row, COORD)])
    assert result.lost == [row["uri"]] and not result.complete and result.copies == 0
    assert {loc: (Path(loc.root) / a.key_for(row["uri"])).read_bytes() for loc in (a, b)} == damaged


def test_a_dry_run_reports_what_it_would_copy_and_writes_nothing(two) -> None:
    a, b = two
    row = engine(ReplicatedStore([a, b])).serialize(VALUE, COORD)
    (Path(b.root) / a.key_for(row["uri"])).unlink()
    result = engine(ReplicatedStore([a, b])).repair_rows([(row, COORD)], dry_run=True)
    assert (result.repaired, result.copies) == (1, 1)
    assert not (Path(b.root) / a.key_for(row["uri"])).exists()


def test_a_reference_copied_into_another_row_is_refused_and_nothing_is_copied(two) -> None:
    a, b = two
    keyring = KeyRing.single(Keyset.generate())
    guard = Guard(SecurityConfig(keyring=keyring))
    row = engine(ReplicatedStore([a, b]), guard=guard).serialize(VALUE, COORD)
    (Path(b.root) / a.key_for(row["uri"])).unlink()
    events = Events()
    result = engine(ReplicatedStore([a, b]), events=events, guard=Guard(SecurityConfig(keyring=keyring))).repair_rows(
        [(row, OTHER)]
    )
    assert len(result.refused) == 1 and result.copies == 0
    assert not (Path(b.root) / a.key_for(row["uri"])).exists()
    assert [e.outcome for e in events.seen if e.op == "repair"] == ["denied"]


def test_a_location_that_cannot_be_written_is_reported_not_hidden(two) -> None:
    a, b = two
    row = engine(ReplicatedStore([a, b])).serialize(VALUE, COORD)
    (Path(b.root) / a.key_for(row["uri"])).unlink()
    result = engine(ReplicatedStore([a, FaultyStore(b, fail_writes=True)])).repair_rows([(row, COORD)])
    assert result.copies == 0 and len(result.errors) == 1 and not result.complete
