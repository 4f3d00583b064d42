"""Rotation: values written under key 1 stay readable after rotating to key 2, re-wrapping
moves them to key 2 without touching their bodies or references, and key 1 can then go."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.cli import main
from xcomstash.commands.rewrap import resign_references, rewrap_store
from xcomstash.maintenance.rows import XComRow
from xcomstash.security.crypto.keyset import KeyRing, Keyset, write_keyset_file
from xcomstash.security.crypto.stream import slot_key_id
from xcomstash.errors import KeyUnavailableError
from xcomstash.format.container import read_layout
from xcomstash.security.guard import Guard, SecurityConfig


def engine_for(root, keyset: Keyset | None) -> Engine:
    config = StashConfig(store_url=f"file://{root}", threshold=0, read_ahead=False)
    if keyset is None:
        return Engine(config)
    return Engine(config, guard=Guard(SecurityConfig(keyring=KeyRing.single(keyset), encrypt=True, sign_references=True)))


def coords(n: int) -> list[XComCoordinate]:
    return [XComCoordinate("dag_r", "run", f"t{i}", -1, "return_value") for i in range(n)]


class TableRows:
    """An xcom table held in a dict (coordinate -> JSON text), with the compare-and-set the
    database source offers."""

    def __init__(self, rows: dict[XComCoordinate, dict]) -> None:
        self.values = {c: json.dumps(v) for c, v in rows.items()}

    def iter_rows(self, selection):
        return [XComRow(c, v) for c, v in list(self.values.items())]

    def replace_value(self, coordinate, expected, new_value) -> bool:
        if self.values.get(coordinate) != expected:
            return False
        self.values[coordinate] = new_value
        return True

    def row(self, coordinate) -> dict:
        return json.loads(self.values[coordinate])


def slot_ids(engine: Engine, rows) -> set[str]:
    out = set()
    for row in rows:
        data = engine.store.get(engine.store.key_for(row["uri"]))
        layout = read_layout(len(data), lambda o, n: data[o : o + n])
        out.add(slot_key_id(layout.key_slot))
    return out


def test_rotate_rewrap_remove_keeps_everything_readable(tmp_path) -> None:
    k1 = Keyset.generate()
    first = engine_for(tmp_path, k1)
    values = [np.arange(1000 * (i + 1), dtype="float64") for i in range(4)]
    rows = [first.serialize(v, c) for v, c in zip(values, coords(4))]
    plain_row = engine_for(tmp_path, None).serialize({"plain": True}, XComCoordinate("dag_r", "run", "p", -1, "k"))
    k2 = k1.rotated()
    second = engine_for(tmp_path, k2)
    assert all(np.array_equal(second.deserialize(r, c), v) for r, c, v in zip(rows, coords(4), values))

    before = {r["uri"]: r["digest"] for r in rows}
    summary = rewrap_store(second.store, KeyRing.single(k2))
    assert summary.rewrapped == 4 and summary.plaintext == 1 and summary.failed == []
    assert summary.old_key_ids == {k1.primary_id: 4}
    assert slot_ids(second, rows) == {k2.primary_id}
    again = rewrap_store(second.store, KeyRing.single(k2))
    assert again.rewrapped == 0 and again.current == 4

    only_k2 = engine_for(tmp_path, k2.without(k1.primary_id))
    with pytest.raises(KeyUnavailableError):  # the rows are still signed by key 1
        only_k2.deserialize(rows[0], coords(4)[0])
    table = TableRows(dict(zip(coords(4), rows)))
    resign_references(table, KeyRing.single(k2), summary)
    assert summary.references_resigned == 4 and summary.references_failed == []
    for r, c, v in zip(rows, coords(4), values):
        row = table.row(c)
        assert row["mac"].startswith(k2.primary_id + ":")
        assert {k: v for k, v in row.items() if k != "mac"} == {k: v for k, v in r.items() if k != "mac"}
        assert before[row["uri"]] == row["digest"]  # body, digest and URI untouched
        assert np.array_equal(only_k2.deserialize(row, c), v)
    assert plain_row["__xcomstash__"] == 1


def test_forged_rows_are_never_re_signed(tmp_path) -> None:
    k1 = Keyset.generate()
    row = engine_for(tmp_path, k1).serialize(np.arange(3.0), coords(1)[0])
    k2 = k1.rotated()
    table = TableRows({coords(1)[0]: {**row, "uri": row["uri"].replace("t0", "t9")}})
    summary = rewrap_store(engine_for(tmp_path, k2).store, KeyRing.single(k2))
    resign_references(table, KeyRing.single(k2), summary)
    assert summary.references_resigned == 0 and "ReferenceSignatureError" in summary.references_failed[0][1]


def test_missing_key_is_reported_and_nothing_is_lost(tmp_path) -> None:
    k1 = Keyset.generate()
    row = engine_for(tmp_path, k1).serialize(np.arange(10.0), coords(1)[0])
    stranger = Keyset.generate()
    summary = rewrap_store(engine_for(tmp_path, stranger).store, KeyRing.single(stranger))
    assert summary.rewrapped == 0 and len(summary.failed) == 1 and "KeyUnavailableError" in summary.failed[0][1]
    assert np.array_equal(engine_for(tmp_path, k1).deserialize(row, coords(1)[0]), np.arange(10.0))


def test_state_file_resumes_after_the_last_object_done(tmp_path) -> None:
    k1 = Keyset.generate()
    first = engine_for(tmp_path / "s", k1)
    rows = [first.serialize(np.arange(5.0) + i, c) for i, c in enumerate(coords(3))]
    k2 = k1.rotated()
    keys = sorted(first.store.key_for(r["uri"]) for r in rows)
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"last_key": keys[0]}))  # as if interrupted after the first
    summary = rewrap_store(first.store, KeyRing.single(k2), state=state)
    assert summary.rewrapped == 2
    assert json.loads(state.read_text())["last_key"] == keys[-1]
    still_old = [r for r in rows if first.store.key_for(r["uri"]) == keys[0]]
    assert slot_ids(first, still_old) == {k1.primary_id}


def test_cli_rewrap_with_dry_run(tmp_path, capsys) -> None:
    k1 = Keyset.generate()
    row = engine_for(tmp_path / "s", k1).serialize(np.arange(5.0), coords(1)[0])
    keyfile = tmp_path / "k.json"
    write_keyset_file(keyfile, k1.rotated())
    args = ["keys", "rewrap", "--store-url", f"file://{tmp_path / 's'}", "--keysets", f"file:{keyfile}", "--references", "skip"]
    assert main([*args, "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["rewrapped"] == 1
    with pytest.raises(KeyUnavailableError):  # dry run changed nothing
        engine_for(tmp_path / "s", k1.rotated().without(k1.primary_id)).deserialize(row, coords(1)[0])
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["rewrapped"] == 1
