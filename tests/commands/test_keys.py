from __future__ import annotations

import json
import os
import stat

import numpy as np

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.cli import main
from xcomstash.commands.keys import remove
from xcomstash.security.crypto.keyset import KeyRing, Keyset, read_keyset_file, write_keyset_file
from xcomstash.security.guard import Guard, SecurityConfig
from tests.commands.test_rewrap import TableRows


def test_generate_add_promote_list_remove(tmp_path, capsys) -> None:
    path = tmp_path / "keys.json"
    assert main(["keys", "generate", str(path)]) == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first = read_keyset_file(path).primary_id
    assert main(["keys", "generate", str(path)]) == 1  # never overwrites
    assert main(["keys", "add", str(path)]) == 0
    added = read_keyset_file(path)
    (new,) = set(added.ids) - {first}
    assert added.primary_id == first  # step 1 leaves the primary alone
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert main(["keys", "promote", str(path), new]) == 0
    promoted = read_keyset_file(path)
    assert promoted.primary_id == new and set(promoted.ids) == {first, new}
    capsys.readouterr()
    assert main(["keys", "list", str(path)]) == 0
    listing = capsys.readouterr().out
    assert f"{new}\tprimary" in listing and f"{first}\tolder" in listing
    assert '"secret"' not in listing and promoted.primary.secret.hex() not in listing
    assert main(["keys", "remove", str(path), new, "--unchecked"]) == 1  # not the primary
    assert main(["keys", "remove", str(path), "knothere", "--unchecked"]) == 1
    assert main(["keys", "remove", str(path), first, "--unchecked"]) == 0
    assert read_keyset_file(path).ids == (new,)


def test_rotate_adds_a_key_without_promoting_it_unless_asked(tmp_path, capsys) -> None:
    """Workers that still hold the old file must be able to read new values: a rotated key
    becomes primary only in a second step (or with --promote-now, said to be unsafe)."""
    path = tmp_path / "keys.json"
    main(["keys", "generate", str(path)])
    first = read_keyset_file(path).primary_id
    assert main(["keys", "rotate", str(path)]) == 0
    rotated = read_keyset_file(path)
    assert rotated.primary_id == first and len(rotated.ids) == 2
    assert "promote" in capsys.readouterr().err
    assert main(["keys", "rotate", str(path), "--promote-now"]) == 0
    now = read_keyset_file(path)
    assert now.primary_id not in rotated.ids and len(now.ids) == 3
    assert "KeyUnavailableError" in capsys.readouterr().err


def test_world_readable_keyset_is_warned_about(tmp_path, capsys) -> None:
    path = tmp_path / "keys.json"
    main(["keys", "generate", str(path)])
    os.chmod(path, 0o644)
    assert main(["keys", "list", str(path)]) == 0
    assert "chmod 600" in capsys.readouterr().err


def _engine(root, keyset: Keyset) -> Engine:
    return Engine(
        StashConfig(store_url=f"file://{root}", threshold=0, read_ahead=False),
        guard=Guard(SecurityConfig(keyring=KeyRing.single(keyset), encrypt=True, sign_references=True)),
    )


def test_remove_refuses_while_objects_or_references_still_need_the_key(tmp_path, capsys) -> None:
    """The failure of the report: removing the old key while references were still signed by
    it made those values unreadable. Remove now checks both the store and the xcom table."""
    k1 = Keyset.generate()
    store_root = tmp_path / "store"
    c = XComCoordinate("dag_k", "run", "t", -1, "return_value")
    row = _engine(store_root, k1).serialize(np.arange(50.0), c)
    k2 = Keyset(k1.primary_id, k1.keys).rotated()
    path = tmp_path / "keys.json"
    write_keyset_file(path, k2)
    engine = _engine(store_root, k2)
    table = TableRows({c: row})

    from xcomstash.commands.rewrap import resign_references, rewrap_store

    assert remove(path, k1.primary_id, store=engine.store, rows=table) == 1  # object + reference
    out = json.loads(capsys.readouterr().out)
    assert out["objects"] == 1 and out["references"] == 1
    summary = rewrap_store(engine.store, KeyRing.single(k2))  # objects done, references not yet
    assert remove(path, k1.primary_id, store=engine.store, rows=table) == 1
    assert json.loads(capsys.readouterr().out) | {"examples": []} == {
        "key_id": k1.primary_id, "objects": 0, "references": 1, "unreadable_objects": 0,
        "invalid_references": 0, "unchecked_objects": 0, "examples": [],
    }
    assert read_keyset_file(path).ids == k2.ids  # nothing removed
    resign_references(table, KeyRing.single(k2), summary)
    assert remove(path, k1.primary_id, store=engine.store, rows=table) == 0
    only_k2 = _engine(store_root, read_keyset_file(path))
    assert np.array_equal(only_k2.deserialize(table.row(c), c), np.arange(50.0))


def test_remove_cannot_check_without_the_store_and_says_so(tmp_path, capsys) -> None:
    path = tmp_path / "keys.json"
    write_keyset_file(path, Keyset.generate().rotated())
    old = read_keyset_file(path).ids[1]
    assert main(["keys", "remove", str(path), old, "--store-url", f"file://{tmp_path}/nostore", "--api-url", "http://127.0.0.1:9"]) == 1
    assert "nothing was removed" in capsys.readouterr().err
    assert old in read_keyset_file(path).ids
