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
