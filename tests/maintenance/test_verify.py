"""``check_object``, verify's check of one stored object against its reference, on objects the
real engine wrote (plaintext and encrypted): the same check a pull makes (verified_layout),
then every frame when ``full``."""

from __future__ import annotations

import dataclasses
import os

import pytest

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.format.container import read_layout
from xcomstash.format.reference import Reference
from xcomstash.maintenance.verify import CORRUPT, MISSING, OK, check_object
from xcomstash.security.crypto.keyset import KeyRing, Keyset
from xcomstash.security.guard import Guard, SecurityConfig
from xcomstash.stores import LocalStore

COORD = XComCoordinate("d", "r", "t", -1, "return_value")
PAYLOAD = os.urandom(300_000) + b"compressible " * 20_000


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def push(store: LocalStore, *, encrypt: bool = False) -> Reference:
    guard = Guard(SecurityConfig(keyring=KeyRing.single(Keyset.generate()), encrypt=True), None, lambda: None) if encrypt else None
    engine = Engine(StashConfig(store_url=store.root_uri, threshold=0, read_ahead=False), store=store, guard=guard)
    return Reference.from_json(engine.serialize(PAYLOAD, COORD))


def flip_body_byte(store: LocalStore, ref: Reference) -> None:
    """Alter one stored payload byte: the root digest (header, table, footer) still matches."""
    path = store.root / store.key_for(ref.uri)
    data = bytearray(path.read_bytes())
    layout = read_layout(len(data), lambda o, n: bytes(data[o : o + n]))
    data[layout.body_offset + 10] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("encrypt", [False, True], ids=["plaintext", "encrypted"])
def test_check_object_passes_an_intact_object_and_counts_what_it_read(store, encrypt: bool) -> None:
    ref = push(store, encrypt=encrypt)
    assert check_object(store, ref, full=True) == (OK, "", ref.size)
    status, detail, quick_bytes = check_object(store, ref, full=False)
    assert (status, detail) == (OK, "") and 0 < quick_bytes < ref.size


@pytest.mark.parametrize("encrypt", [False, True], ids=["plaintext", "encrypted"])
def test_check_object_finds_an_altered_frame_only_in_a_full_check(store, encrypt: bool) -> None:
    ref = push(store, encrypt=encrypt)
    flip_body_byte(store, ref)
    assert check_object(store, ref, full=False)[0] == OK
    status, detail, _ = check_object(store, ref, full=True)
    assert status == CORRUPT and "does not match its digest" in detail


@pytest.mark.parametrize(
    "change, wording",
    [
        ({"size": 1}, "bytes where the reference says"),
        ({"digest": "sha256:" + "0" * 64}, "root digest"),
        ({"codec": "json"}, "header codec"),
    ],
    ids=["size", "digest", "codec"],
)
def test_check_object_reports_a_reference_the_object_does_not_match_as_corrupt(store, change, wording) -> None:
    ref = push(store)
    if "size" in change:
        change = {"size": ref.size + 1}
    status, detail, nbytes = check_object(store, dataclasses.replace(ref, **change), full=True)
    assert status == CORRUPT and wording in detail and nbytes == 0


def test_check_object_reports_a_missing_object(store) -> None:
    ref = push(store)
    (store.root / store.key_for(ref.uri)).unlink()
    assert check_object(store, ref, full=True) == (MISSING, "object is missing", 0)


# ------------------------------------------------------------------ every location


def test_verify_checks_every_location_and_reports_a_lost_copy_as_degraded(tmp_path) -> None:
    from pathlib import Path

    import numpy as np

    from xcomstash import Engine, StashConfig, XComCoordinate
    from xcomstash.maintenance.rows import XComRow
    from xcomstash.maintenance.verify import verify
    from xcomstash.stores import LocalStore, ReplicatedStore

    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    store = ReplicatedStore([a, b])
    coordinate = XComCoordinate("d", "r", "t", -1, "return_value")
    engine = Engine(StashConfig(store_url=a.root_uri, threshold=0, read_ahead=False), store)
    row = XComRow(coordinate, engine.serialize(np.arange(50_000), coordinate))
    assert verify([row], store).healthy
    (Path(b.root) / a.key_for(row.value["uri"])).unlink()
    report = verify([row], store)
    assert (report.degraded, report.healthy) == (1, False)
    assert b.root_uri in report.problems[0].detail and "missing" in report.problems[0].detail
    (Path(a.root) / a.key_for(row.value["uri"])).unlink()
    assert verify([row], store).missing == 1


def test_stats_location_usage_lists_what_each_location_holds(tmp_path) -> None:
    import numpy as np

    from xcomstash import Engine, StashConfig, XComCoordinate
    from xcomstash.maintenance.stats import location_usage
    from xcomstash.stores import FaultyStore, LocalStore, ReplicatedStore

    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    coordinate = XComCoordinate("d", "r", "t", -1, "return_value")
    Engine(StashConfig(store_url=a.root_uri, threshold=0), ReplicatedStore([a, b])).serialize(np.arange(10_000), coordinate)
    Engine(StashConfig(store_url=a.root_uri, threshold=0), ReplicatedStore([a, FaultyStore(b, fail_writes=True)], write_quorum=1)).serialize(
        np.arange(20_000), coordinate.__class__("d", "r", "t2", -1, "return_value")
    )
    usage = location_usage(ReplicatedStore([a, b]))
    assert usage[a.root_uri]["objects"] > usage[b.root_uri]["objects"] > 0
    assert location_usage(a) == {}
