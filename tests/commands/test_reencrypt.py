"""``keys reencrypt`` (finding 15): a re-wrap keeps the data key, so an old key plus an old copy
of the 128-byte key slot still decrypts a re-wrapped object. Re-encryption gives the value a
fresh data key, after the checks of any read, and is crash-safe at every step.

On the local store (real files), rows in a table with compare-and-set."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import pytest

from xcomstash import XComCoordinate
from xcomstash.commands.rewrap import rewrap_store
from xcomstash.errors import DecryptionError
from xcomstash.format.container import read_layout
from xcomstash.maintenance.reencrypt import Options, reencrypt_values
from xcomstash.security.crypto.keyset import KeyRing, Keyset
from xcomstash.security.crypto.stream import Envelope, open_object, slot_key_id
from xcomstash.stores.wrapper import WrapperStore
from tests.commands.test_rewrap import TableRows
from tests.commands.test_rewrap_crash import Crash, coords, engine_for, two_step, values


class Rows(TableRows):
    def get_value(self, coordinate):
        return (coordinate in self.values, self.values.get(coordinate))


def setup(root, n: int = 3) -> tuple[Keyset, Keyset, Rows, list[np.ndarray]]:
    k1 = Keyset.generate()
    first = engine_for(root, k1)
    vals = values(n)
    rows = Rows({c: first.serialize(v, c) for c, v in zip(coords(n), vals)})
    return k1, two_step(k1), rows, vals


def all_read(root, keyset: Keyset, rows: Rows, vals) -> bool:
    engine = engine_for(root, keyset)
    return all(np.array_equal(engine.deserialize(rows.row(c), c), v) for c, v in zip(coords(len(vals)), vals))


def data_key_opens(keyset: Keyset, old_slot: bytes, data: bytes, c: XComCoordinate) -> bool:
    """Whether an old key slot (with the old key) still opens the object's first frame."""
    layout = read_layout(len(data), lambda o, n: data[o : o + n])
    envelope = Envelope.from_header(layout.header.encryption)
    try:
        cipher = open_object(keyset, envelope, layout.header_bytes, old_slot, c.dag_id, c.run_id)
        first = layout.frames[0]
        body = data[layout.body_offset : layout.body_offset + first.stored_len]
        cipher.open(0, len(layout.frames) == 1, body, first.method, first.raw_len)
    except DecryptionError:
        return False
    return True


def test_old_key_and_old_slot_open_a_rewrapped_object_but_not_a_reencrypted_one(tmp_path) -> None:
    root = tmp_path / "store"
    k1, k2, rows, vals = setup(root, 1)
    c = coords(1)[0]
    store = engine_for(root, k2).store
    key = store.key_for(rows.row(c)["uri"])
    before = store.get(key)
    old_slot = read_layout(len(before), lambda o, n: before[o : o + n]).key_slot
    rewrap_store(store, KeyRing.single(k2))
    rewrapped = store.get(key)
    assert data_key_opens(k1, old_slot, rewrapped, c)  # what the README warns about

    audit: list[tuple[str, XComCoordinate, dict, str]] = []
    summary = reencrypt_values(store, KeyRing.single(k2), rows, audit=lambda *a: audit.append(a))
    assert summary.reencrypted == 1 and summary.complete
    ref = rows.row(c)
    new_data = store.get(store.key_for(ref["uri"]))
    assert not data_key_opens(k1, old_slot, new_data, c)
    assert store.head(key) is None  # the old object is gone
    assert ref["mac"].startswith(k2.primary_id + ":") and ref["size"] == len(new_data)
    assert slot_key_id(read_layout(len(new_data), lambda o, n: new_data[o : o + n]).key_slot) == k2.primary_id
    assert all_read(root, k2.without(k1.primary_id), rows, vals)
    assert [(o, x, d["digest"]) for o, x, d, _ in audit] == [("ok", c, ref["digest"])]


def test_values_failing_a_read_check_are_refused_and_left_alone(tmp_path) -> None:
    root = tmp_path / "store"
    k1, k2, rows, vals = setup(root, 3)
    store = engine_for(root, k2).store
    c0, c1, c2 = coords(3)
    # c0: a byte of the object flipped (integrity); c1: a genuine reference copied into c2's row.
    path = root / store.key_for(rows.row(c0)["uri"])
    data = bytearray(path.read_bytes())
    data[-200] ^= 1
    path.write_bytes(bytes(data))
    copied = rows.values[c1]
    rows.values[c2] = copied
    audit: list[Any] = []
    summary = reencrypt_values(store, KeyRing.single(k2), rows, audit=lambda *a: audit.append(a))
    errors = dict(summary.failed)
    assert summary.reencrypted == 1 and not summary.complete
    assert "IntegrityError" in errors[str(c0)] or "DecryptionError" in errors[str(c0)]
    assert "copied into another" in errors[str(c2)]
    assert rows.values[c2] == copied and path.read_bytes() == bytes(data)  # untouched
    assert sorted(o for o, *_ in audit) == ["failed", "failed", "ok"]


class CrashAt(WrapperStore):
    """Dies at the n-th call of ``point`` (``publish`` of the new object, or ``delete``)."""

    def __init__(self, inner: Any, point: str) -> None:
        super().__init__(inner)
        self.point = point

    @contextmanager
    def new_object(self, staged_key: str) -> Iterator[Any]:
        with self.inner.new_object(staged_key) as pending:
            if self.point == "publish":
                original = pending.publish

                def publish(key: str) -> None:
                    raise Crash(key)

                pending.publish = publish  # type: ignore[method-assign]
                del original
            yield pending

    def delete(self, key: str) -> None:
        if self.point == "delete":
            raise Crash(key)
        self.inner.delete(key)


class CrashingSwitch(Rows):
    def replace_value(self, coordinate, expected, new_value) -> bool:
        raise Crash(str(coordinate))


@pytest.mark.parametrize("point", ["publish", "switch", "delete"])
def test_crash_at_each_step_keeps_the_value_readable_and_the_next_run_finishes(tmp_path, point) -> None:
    root = tmp_path / "store"
    k1, k2, rows, vals = setup(root, 2)
    store = engine_for(root, k2).store
    state = tmp_path / "reencrypt.json"
    crashing_store = CrashAt(store, point) if point != "switch" else store
    crashing_rows = rows
    if point == "switch":
        crashing_rows = CrashingSwitch({})
        crashing_rows.values = rows.values
    with pytest.raises(Crash):
        reencrypt_values(crashing_store, KeyRing.single(k2), crashing_rows, state=state)
    assert all_read(root, k2, rows, vals)
    summary = reencrypt_values(store, KeyRing.single(k2), rows, state=state)
    assert len(summary.recovered) == 1 and summary.complete
    assert summary.reencrypted == 2  # the value in flight had no checkpoint yet: done again
    assert all_read(root, k2, rows, vals)
    referenced = {store.key_for(rows.row(c)["uri"]) for c in coords(2)}
    stored = {info.key for info in store.list("") if info.key.endswith(".xcs")}
    assert stored == referenced  # nothing orphaned, no old object left behind
    assert all(not k.endswith("return_value.xcs") for k in stored)


def test_dry_run_checks_every_value_and_changes_nothing(tmp_path) -> None:
    root = tmp_path / "store"
    k1, k2, rows, vals = setup(root, 2)
    store = engine_for(root, k2).store
    before = {c: dict(rows.row(c)) for c in coords(2)}
    files = {info.key: store.get(info.key) for info in store.list("")}
    summary = reencrypt_values(store, KeyRing.single(k2), rows, Options(dry_run=True))
    assert summary.reencrypted == 2
    assert {c: rows.row(c) for c in coords(2)} == before
    assert {info.key: store.get(info.key) for info in store.list("")} == files


def test_key_id_option_selects_values_under_that_key(tmp_path) -> None:
    root = tmp_path / "store"
    k1, k2, rows, vals = setup(root, 2)
    store = engine_for(root, k2).store
    summary = reencrypt_values(store, KeyRing.single(k2), rows, Options(key_id=k2.primary_id))
    assert summary.reencrypted == 0 and summary.other_key == 2
