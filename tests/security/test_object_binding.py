"""An encrypted object is read only for the XCom it was written for.

The data key is bound to the DAG (or run), not to the XCom, so another XCom's object of the
same DAG decrypts. Where references are not signed (signing off) someone who can write the xcom table points a row at another XCom's object:
the reader used to return that other value. The object header names its XCom and is
authenticated by the decryption, so the reader now checks it against the XCom it asked for. And
with encryption on, a plaintext object (which anyone with write access to the bucket can make)
is refused instead of read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.errors import DecryptionError, IntegrityError
from xcomstash.security.crypto.keyset import KeyRing, Keyset
from xcomstash.security.guard import Guard, SecurityConfig
from xcomstash.stores import open_store

ASKED = XComCoordinate("team_a_etl", "run_1", "extract", 0, "return_value")


def make_engine(root: Path, keyset: Keyset | None, **security: Any) -> Engine:
    config = StashConfig(store_url=f"file://{root}", threshold=0, read_ahead=False)
    if keyset is not None:
        security = {"keyring": KeyRing.single(keyset), "encrypt": True, **security}
    return Engine(config, open_store(config.store_url), guard=Guard(SecurityConfig(**security)))


def unsigned_pointing_at(row: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """What a writer of the xcom table makes of ``row``: same XCom, another object."""
    forged = {k: v for k, v in row.items() if k != "mac"}
    forged.update(uri=target["uri"], size=target["size"], digest=target["digest"], codec=target["codec"])
    return forged


#: Encryption with unsigned references accepted while migrating is refused at start-up
#: (tests/security/test_unsigned_and_plain_rows.py); signing off is the one unsigned mode left.
MODES = {
    "signing off": {"sign_references": False},
}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize(
    "other",
    [
        XComCoordinate("team_a_etl", "run_1", "vault", 0, "return_value"),  # another task
        XComCoordinate("team_a_etl", "run_1", "extract", 1, "return_value"),  # another mapped instance
        XComCoordinate("team_a_etl", "run_1", "extract", 0, "password"),  # another key
    ],
    ids=["task", "map_index", "key"],
)
def test_another_xcoms_object_of_the_same_dag_is_refused(tmp_path, mode, other) -> None:
    engine = make_engine(tmp_path / "s", Keyset.generate(), **MODES[mode])
    mine = engine.serialize({"rows": 3}, ASKED)
    secret = engine.serialize({"db_password": "hunter2"}, other)
    with pytest.raises(DecryptionError, match="written for"):
        engine.deserialize(unsigned_pointing_at(mine, secret), ASKED)
    assert engine.deserialize(mine, ASKED) == {"rows": 3}
    assert engine.deserialize(secret, other) == {"db_password": "hunter2"}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_plaintext_object_is_refused_when_encryption_is_on(tmp_path, mode) -> None:
    keyset = Keyset.generate()
    engine = make_engine(tmp_path / "s", keyset, **MODES[mode])
    mine = engine.serialize({"amount": 10}, ASKED)
    # Someone with write access to the bucket (no keys) stores a value of their choosing ...
    attacker = make_engine(tmp_path / "s", None)
    planted = attacker.serialize({"amount": 10_000_000}, XComCoordinate("team_a_etl", "run_1", "x", -1, "y"))
    forged = unsigned_pointing_at(mine, planted)
    with pytest.raises(DecryptionError, match="plaintext") as caught:
        engine.deserialize(forged, ASKED)
    assert isinstance(caught.value, IntegrityError) and caught.value.uri == planted["uri"]
    # ... also at the very place of the XCom asked for.
    at_place = attacker.serialize({"amount": 10_000_000}, ASKED)
    with pytest.raises(DecryptionError, match="plaintext"):
        engine.deserialize(unsigned_pointing_at(mine, at_place), ASKED)


def test_plaintext_objects_from_before_encryption_are_read_only_when_accepted(tmp_path) -> None:
    keyset = Keyset.generate()
    before = make_engine(tmp_path / "s", keyset, encrypt=False, sign_references=True)
    old = before.serialize({"from": "before"}, ASKED)
    now = make_engine(tmp_path / "s", keyset, sign_references=True)
    with pytest.raises(DecryptionError, match="accept_plaintext_objects"):
        now.deserialize(old, ASKED)
    migrating = make_engine(tmp_path / "s", keyset, sign_references=True, accept_plaintext_objects=True)
    assert migrating.deserialize(old, ASKED) == {"from": "before"}
    # Without encryption nothing changes: plaintext is what is written.
    assert before.deserialize(old, ASKED) == {"from": "before"}
