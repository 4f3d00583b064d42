"""Moving a store: with ``previous_store_urls`` references into the old store stay readable
(and new values go to the new one); ``Engine.move_rows`` copies each value into the new store,
verified, rewrites its row (re-signed, compare-and-set) and deletes the old object, after which
the old store is no longer needed. Damage is reported, never moved."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.errors import InvalidReferenceError, IntegrityError
from xcomstash.security.crypto.keyset import Keyset, KeyRing
from xcomstash.security.guard import Guard, SecurityConfig

FRAME = pd.DataFrame({"a": np.arange(30_000), "b": np.arange(30_000) * 0.5})
ARRAY = np.arange(40_000, dtype=np.float32)


def coord(task: str, key: str = "return_value") -> XComCoordinate:
    return XComCoordinate("etl", "manual__1", task, -1, key)


def files(root: Path) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names}


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing({"*": Keyset.generate()})


def engine(keyring: KeyRing, store_url: str, previous: tuple[str, ...] = ()) -> Engine:
    config = StashConfig(store_url=store_url, previous_store_urls=previous, threshold=0, read_ahead=False)
    return Engine(config, guard=Guard(SecurityConfig(keyring=keyring)))


def test_values_move_to_the_new_store_and_the_old_one_empties(tmp_path: Path, keyring: KeyRing) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    before = engine(keyring, f"file://{old}")
    rows = {coord("frame"): before.serialize(FRAME, coord("frame")), coord("array"): before.serialize(ARRAY, coord("array"))}

    # store_url moved: without the old store configured, old references are refused ...
    with pytest.raises(InvalidReferenceError, match="outside"):
        engine(keyring, f"file://{new}").deserialize(rows[coord("frame")], coord("frame"))
    # ... with it, they read; new values go to the new store only.
    after = engine(keyring, f"file://{new}", (f"file://{old}",))
    assert after.deserialize(rows[coord("frame")], coord("frame")).equals(FRAME)
    fresh = after.serialize(ARRAY * 2, coord("fresh"))
    assert fresh["uri"].startswith(f"file://{new}/")

    def replace(c: XComCoordinate, value: object, expected: object) -> bool:
        if rows[c] != expected:
            return False
        rows[c] = value
        return True

    dry = after.move_rows(list((v, c) for c, v in rows.items()), replace, dry_run=True)
    assert dry.moved == 2 and files(old) and all(v["uri"].startswith(f"file://{old}/") for v in rows.values())
    result = after.move_rows(list((v, c) for c, v in rows.items()), replace)
    assert result.moved == 2 and result.deleted == 2 and not result.errors, result
    assert all(v["uri"].startswith(f"file://{new}/") for v in rows.values())
    assert not [f for f in files(old) if not f.startswith("!")], files(old)  # no value object left there
    # The new store alone serves every value, through re-signed references.
    only_new = engine(keyring, f"file://{new}")
    assert only_new.deserialize(rows[coord("frame")], coord("frame")).equals(FRAME)
    assert np.array_equal(only_new.deserialize(rows[coord("array")], coord("array")), ARRAY)
    assert only_new.get_stored(coord("frame")).equals(FRAME)  # its link moved too
    # Running it again finds everything in place.
    again = after.move_rows(list((v, c) for c, v in rows.items()), replace)
    assert again.in_place == 2 and again.moved == 0


def test_a_damaged_object_is_reported_and_left_where_it_is(tmp_path: Path, keyring: KeyRing) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    ref = engine(keyring, f"file://{old}").serialize(ARRAY, coord("array"))
    path = old / engine(keyring, f"file://{old}").store.key_for(ref["uri"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    rows = {coord("array"): ref}
    after = engine(keyring, f"file://{new}", (f"file://{old}",))
    result = after.move_rows([(ref, coord("array"))], lambda c, v, e: rows.__setitem__(c, v) or True)
    assert result.moved == 0 and result.errors and "does not verify" in result.errors[0]
    assert rows[coord("array")] is ref and path.exists() and not files(new)
    with pytest.raises(IntegrityError):
        after.deserialize(ref, coord("array"))


def test_a_row_rewritten_meanwhile_is_left_alone(tmp_path: Path, keyring: KeyRing) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    ref = engine(keyring, f"file://{old}").serialize(ARRAY, coord("array"))
    after = engine(keyring, f"file://{new}", (f"file://{old}",))
    result = after.move_rows([(ref, coord("array"))], lambda c, v, e: False)
    assert result.moved == 0 and "changed while" in result.errors[0] and result.deleted == 0
    assert after.deserialize(ref, coord("array")) is not None  # the old object is still there
