from __future__ import annotations

import json
import os
import stat

import pytest

from xcomstash.security.crypto.keyset import (
    PURPOSE_DEDUP,
    PURPOSE_MAC,
    PURPOSE_WRAP,
    Key,
    KeyRing,
    Keyset,
    file_is_private,
    load_keyring,
    load_keyset,
    parse_scoped_sources,
    read_keyset_file,
    write_keyset_file,
)
from xcomstash.errors import ConfigError, KeyUnavailableError


def test_keyset_json_round_trip_keeps_ids_secrets_and_primary() -> None:
    ks = Keyset.generate().rotated()
    again = Keyset.from_json(ks.to_json())
    assert again.primary_id == ks.primary_id
    assert [(k.id, k.secret) for k in again.keys] == [(k.id, k.secret) for k in ks.keys]


def test_repr_and_errors_never_show_key_material() -> None:
    ks = Keyset.generate()
    secret_b64 = json.loads(ks.to_json())["keys"][0]["secret"]
    assert secret_b64 not in repr(ks)
    assert ks.primary.secret.hex() not in repr(ks)
    broken = ks.to_json().replace(ks.primary_id, "x" * 80)
    with pytest.raises(ConfigError) as err:
        Keyset.from_json(broken)
    assert secret_b64 not in str(err.value)


def test_subkeys_differ_per_purpose_and_per_key() -> None:
    a, b = Key.generate(), Key.generate()
    subs = {a.subkey(p) for p in (PURPOSE_WRAP, PURPOSE_MAC, PURPOSE_DEDUP)}
    assert len(subs) == 3 and a.secret not in subs
    assert a.subkey(PURPOSE_WRAP) != b.subkey(PURPOSE_WRAP)
    assert Key(a.id, a.secret).subkey(PURPOSE_MAC) == a.subkey(PURPOSE_MAC)  # deterministic


def test_rotation_puts_a_new_primary_in_front_and_keeps_old_keys() -> None:
    ks = Keyset.generate()
    rotated = ks.rotated()
    assert rotated.primary_id != ks.primary_id
    assert rotated.get(ks.primary_id).secret == ks.primary.secret
    assert rotated.without(ks.primary_id).ids == (rotated.primary_id,)
    with pytest.raises(ConfigError, match="primary"):
        rotated.without(rotated.primary_id)


def test_unknown_key_id_is_a_typed_error_naming_the_held_ids() -> None:
    ks = Keyset.generate()
    with pytest.raises(KeyUnavailableError, match=ks.primary_id):
        ks.get("kdeadbeef")


@pytest.mark.parametrize(
    "doc",
    [
        "not json",
        "[]",
        '{"xcomstash_keyset": 2, "primary": "a", "keys": []}',
        '{"xcomstash_keyset": 1, "primary": "a", "keys": []}',
        '{"xcomstash_keyset": 1, "primary": "a", "keys": [{"id": "a", "secret": "!!"}]}',
        '{"xcomstash_keyset": 1, "primary": "a", "keys": [{"id": "a", "secret": "AAAA"}]}',
        '{"xcomstash_keyset": 1, "primary": "b", "keys": [{"id": "a", "secret": "' + "A" * 43 + '"}]}',
        '{"xcomstash_keyset": 1, "primary": "a/b", "keys": [{"id": "a/b", "secret": "' + "A" * 43 + '"}]}',
    ],
)
def test_malformed_keyset_documents_are_config_errors(doc: str) -> None:
    with pytest.raises(ConfigError):
        Keyset.from_json(doc)


def test_generated_key_file_is_0600_and_never_silently_overwritten(tmp_path) -> None:
    path = tmp_path / "keys.json"
    ks = Keyset.generate()
    write_keyset_file(path, ks)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and file_is_private(path)
    with pytest.raises(FileExistsError):
        write_keyset_file(path, Keyset.generate())
    rotated = ks.rotated()
    write_keyset_file(path, rotated, overwrite=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_keyset_file(path).primary_id == rotated.primary_id
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]  # no temporary left behind


def test_sources_env_and_file(tmp_path, monkeypatch) -> None:
    ks = Keyset.generate()
    monkeypatch.setenv("XCS_TEST_KEYS", ks.to_json())
    assert load_keyset("env:XCS_TEST_KEYS").primary_id == ks.primary_id
    write_keyset_file(tmp_path / "k.json", ks)
    assert load_keyset(f"file:{tmp_path / 'k.json'}").primary_id == ks.primary_id
    assert load_keyset("variable:x", {"variable": lambda name: ks.to_json()}).primary_id == ks.primary_id
    for bad in ("env:XCS_NOT_SET_ANYWHERE", "nope:x", "file", f"file:{tmp_path / 'missing'}"):
        with pytest.raises(ConfigError):
            load_keyset(bad)


def test_scoped_keyring_picks_the_first_matching_pattern(tmp_path, monkeypatch) -> None:
    a, b, rest = Keyset.generate(), Keyset.generate(), Keyset.generate()
    for name, ks in (("A", a), ("B", b), ("R", rest)):
        monkeypatch.setenv(f"XCS_KS_{name}", ks.to_json())
    ring = load_keyring("team_a_*=env:XCS_KS_A; team_b_*=env:XCS_KS_B\n*=env:XCS_KS_R")
    assert ring is not None
    assert ring.for_dag("team_a_etl") is not None and ring.for_dag("team_a_etl").primary_id == a.primary_id
    assert ring.for_dag("team_b_x").primary_id == b.primary_id
    assert ring.for_dag("other").primary_id == rest.primary_id
    only_a = load_keyring("team_a_*=env:XCS_KS_A")
    assert only_a is not None
    with pytest.raises(KeyUnavailableError, match="team_b_x"):
        only_a.for_dag("team_b_x")
    assert load_keyring("  ;\n ") is None
    assert KeyRing.single(a).for_dag("anything") is a


def test_scoped_sources_parsing() -> None:
    assert parse_scoped_sources("env:X") == [("*", "env:X")]
    assert parse_scoped_sources("file:/a=b") == [("*", "file:/a=b")]
    assert parse_scoped_sources("t_*=file:/k.json;u=env:U") == [("t_*", "file:/k.json"), ("u", "env:U")]
