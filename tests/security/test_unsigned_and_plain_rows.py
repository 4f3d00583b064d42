"""Rows an attacker who may write XComs (REST API, SQL) can set without the workers' keys:
references with their MAC stripped while signing is being switched on, and plain values in
exclusive mode. Each test replays the attack as found against the engine."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.errors import ConfigError, PlainRowError, ReferenceSignatureError
from xcomstash.observe.audit import AuditLog, Query, StoreSink, read_events
from xcomstash.observe.events import DENIED
from xcomstash.security.crypto.keyset import KeyRing, Keyset
from xcomstash.security.guard import Guard, SecurityConfig
from xcomstash.security.readers import Actor, Restricted
from xcomstash.stores import open_store

PRODUCER = XComCoordinate("team_a_etl", "run_1", "extract", -1, "return_value")
OTHER_RUN = XComCoordinate("team_a_etl", "run_2", "extract", -1, "return_value")
ARRAY = np.arange(50_000, dtype=np.float64)


def engine_at(root: Path, keyring: KeyRing | None, *, actor: Actor | None = None, exclusive: bool = False,
              accept_plain_rows: bool = False, audit: bool = False, **security: Any) -> Engine:
    config = StashConfig(store_url=f"file://{root}", threshold=0, read_ahead=False, cache_dir=None,
                         exclusive=exclusive, accept_plain_rows=accept_plain_rows)
    store = open_store(config.store_url)
    audit_log = AuditLog([StoreSink(store, flush_events=1)]) if audit else None
    guard = Guard(SecurityConfig(keyring=keyring, **security), audit_log, lambda: actor)
    return Engine(config, store, guard=guard)


def strip_mac(row: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("mac", *fields)}


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing.single(Keyset.generate())


# ---------------------------------------------------------------- unsigned references (6, 11)


def test_a_restricted_value_is_not_read_through_a_reference_whose_mac_and_readers_were_stripped(tmp_path, keyring):
    switched_on = time.time() - 60  # signing was switched on a minute ago: this value is newer
    producer = engine_at(tmp_path, keyring, actor=Actor("team_a_etl", "run_1", "extract"),
                         sign_references=True, unsigned_before=switched_on)
    row = producer.serialize(Restricted({"salary": 1}, tasks=["load"]), PRODUCER)
    forged = strip_mac(row, "readers")  # what the attack PATCHed into the row
    unlisted = engine_at(tmp_path, keyring, actor=Actor("team_a_etl", "run_1", "report"),
                         sign_references=True, unsigned_before=switched_on)
    with pytest.raises(ReferenceSignatureError, match="written after signing"):
        unlisted.deserialize(forged, PRODUCER)
    with pytest.raises(ReferenceSignatureError, match="written after signing"):  # re-targeted too
        unlisted.deserialize(strip_mac(row, "readers", "xcom"), PRODUCER)


def test_an_unsigned_reference_written_before_signing_is_still_read_while_migrating(tmp_path, keyring):
    unsigned_worker = engine_at(tmp_path, None)
    old_row = unsigned_worker.serialize({"a": 1}, PRODUCER)
    assert "mac" not in old_row
    migrating = engine_at(tmp_path, keyring, sign_references=True, unsigned_before=time.time() + 5)
    assert migrating.deserialize(old_row, PRODUCER) == {"a": 1}
    strict = engine_at(tmp_path, keyring, sign_references=True)
    with pytest.raises(ReferenceSignatureError, match="not signed"):
        strict.deserialize(old_row, PRODUCER)


def test_an_unsigned_reference_is_not_read_in_another_dags_row_or_at_a_planted_object(tmp_path, keyring):
    unsigned_worker = engine_at(tmp_path, None)
    old_row = strip_mac(unsigned_worker.serialize({"a": 1}, PRODUCER), "xcom")
    migrating = engine_at(tmp_path, keyring, sign_references=True, unsigned_before=time.time() + 5)
    elsewhere = XComCoordinate("team_b", "run_1", "extract", -1, "return_value")
    with pytest.raises(ReferenceSignatureError, match="another DAG"):
        migrating.deserialize(old_row, elsewhere)
    # An object planted in the store after signing was switched on (mtime now > cutoff).
    cutoff = time.time() + 5
    key = unsigned_worker.store.key_for(old_row["uri"])
    os.utime(Path(unsigned_worker.store.root) / key, (cutoff + 10, cutoff + 10))
    planted = engine_at(tmp_path, keyring, sign_references=True, unsigned_before=cutoff)
    with pytest.raises(ReferenceSignatureError, match="written after signing"):
        planted.deserialize(old_row, PRODUCER)


def test_an_unsigned_reference_never_opens_an_encrypted_object(tmp_path, keyring):
    # Another run's encrypted object, its reference stripped of the MAC and re-targeted.
    encrypting = engine_at(tmp_path, keyring, encrypt=True, sign_references=True)
    row = encrypting.serialize(ARRAY, OTHER_RUN)
    forged = {**strip_mac(row), "xcom": PRODUCER.as_dict()}
    reader = engine_at(tmp_path, keyring, sign_references=True, unsigned_before=time.time() + 5)
    with pytest.raises(ReferenceSignatureError):
        reader.deserialize(forged, PRODUCER)
    # Even when the object predates the cutoff and sits in this run's keyspace.
    same_run = encrypting.serialize(ARRAY, PRODUCER)
    with pytest.raises(ReferenceSignatureError, match="encrypted"):
        reader.deserialize(strip_mac(same_run), PRODUCER)


def test_encryption_refuses_to_run_with_unsigned_references_accepted(keyring):
    with pytest.raises(ConfigError, match="accept_unsigned_references"):
        SecurityConfig(keyring=keyring, encrypt=True, sign_references=True, unsigned_before=time.time())


# --------------------------------------------------------------------- exclusive mode (5)


def test_exclusive_mode_refuses_a_plain_value_patched_over_a_reference(tmp_path, keyring):
    engine = engine_at(tmp_path, keyring, exclusive=True, audit=True, sign_references=True)
    row = engine.serialize({"small": 1}, PRODUCER)
    assert "__xcomstash__" in row  # exclusive: even a small value is a reference
    for plain in ({"small": 2}, "attacker text", 7, [1, 2]):
        with pytest.raises(PlainRowError, match="exclusive"):
            engine.deserialize(plain, expected=None, coordinate=PRODUCER)
    engine.flush()
    denied = list(read_events(engine.store, Query(outcome=DENIED)))
    assert len(denied) == 4 and all(e.xcom["dag_id"] == "team_a_etl" for e in denied)


def test_exclusive_mode_reads_plain_rows_written_before_it_when_told_to(tmp_path, keyring):
    engine = engine_at(tmp_path, keyring, exclusive=True, accept_plain_rows=True, sign_references=True)
    assert engine.deserialize({"old": 1}, PRODUCER) == {"old": 1}
    without_exclusive = engine_at(tmp_path, keyring, sign_references=True)
    assert without_exclusive.deserialize({"old": 1}, PRODUCER) == {"old": 1}
