"""The engine with encryption, signed references, restricted reads, value rules and the audit
log: every way a value can be read with the wrong key, from the wrong place, after tampering,
or by the wrong reader ends in a typed error, never a value."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from xcomstash.stores import open_store
from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.security.readers import Actor, Expected, Restricted
from xcomstash.observe.audit import AuditLog, Query, StoreSink, read_events
from xcomstash.security.crypto.keyset import KeyRing, Keyset
from xcomstash.errors import (
    AccessDeniedError,
    ConfigError,
    DecryptionError,
    IntegrityError,
    InvalidReferenceError,
    KeyUnavailableError,
    ReferenceSignatureError,
    SensitiveDataError,
    TypeNotAllowedError,
    ValueTooLargeError,
)
from xcomstash.format.container import read_layout
from xcomstash.security.rules import Rules, ValueRule, parse_dag_policies
from xcomstash.security.guard import Guard, SecurityConfig
from xcomstash.security.sensitive import Scanner

COORD = XComCoordinate("team_a_etl", "run_1", "extract", -1, "return_value")
AWS = "AKIAIOSFODNN7EXAMPLE"


def make_engine(root: Path, keyring: KeyRing | None, *, actor: Actor | None = None, audit: bool = False,
                threshold: int = 0, **security: Any) -> Engine:
    config = StashConfig(store_url=f"file://{root}", threshold=threshold, read_ahead=False)
    if keyring is not None:
        security.setdefault("encrypt", True)
        security.setdefault("sign_references", True)
    store = open_store(config.store_url)
    audit_log = AuditLog([StoreSink(store, flush_events=1)]) if audit else None
    return Engine(config, store, guard=Guard(SecurityConfig(keyring=keyring, **security), audit_log, lambda: actor))


@pytest.fixture
def keyset() -> Keyset:
    return Keyset.generate()


@pytest.fixture
def engine(tmp_path, keyset) -> Engine:
    return make_engine(tmp_path / "store", KeyRing.single(keyset))


def object_path(engine: Engine, row: dict[str, Any]) -> Path:
    return Path(engine.store.root) / engine.store.key_for(row["uri"])


VALUES = {
    "dict": {"a": [1, 2, 3], "b": "text" * 100},
    "pandas": pd.DataFrame({"x": np.arange(5000, dtype="float64"), "s": [f"r{i}" for i in range(5000)]}),
    "polars": pl.DataFrame({"x": list(range(3000)), "s": ["v"] * 3000}),
    "arrow": pa.table({"x": list(range(3000))}),
    "batch": pa.record_batch({"x": list(range(100))}),
    "ndarray": np.random.default_rng(1).standard_normal((300, 40)),
    "scalar": np.float64(3.5),
    "bytes": os.urandom(3 * 1024 * 1024 + 17),  # several frames, the last one partial
    "string": "x" * 70_000,
}


@pytest.mark.parametrize("name", sorted(VALUES))
def test_round_trip_with_encryption_for_every_codec(engine, name) -> None:
    value = VALUES[name]
    row = engine.serialize(value, COORD)
    assert row["__xcomstash__"] == 1 and "mac" in row
    back = engine.deserialize(row, COORD)
    if isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(back, value)
    elif isinstance(value, pl.DataFrame):
        assert back.equals(value)
    elif isinstance(value, (pa.Table, pa.RecordBatch)):
        assert back.equals(value)
    elif isinstance(value, np.ndarray):
        assert back.dtype == value.dtype and np.array_equal(back, value)
    else:
        assert back == value and type(back) is type(value)


def test_stored_bytes_hold_no_plaintext(engine) -> None:
    marker = b"PLAINTEXT-MARKER-" * 5000
    row = engine.serialize(marker, COORD)
    data = object_path(engine, row).read_bytes()
    assert b"PLAINTEXT-MARKER-" not in data
    layout = read_layout(len(data), lambda o, n: data[o : o + n])
    assert layout.header.encryption is not None and layout.header.encryption["alg"] == "aes256gcm-stream-v2"


def test_wrong_missing_and_other_team_keys(tmp_path, keyset) -> None:
    writer = make_engine(tmp_path / "s", KeyRing.single(keyset))
    row = writer.serialize(VALUES["ndarray"], COORD)
    other = make_engine(tmp_path / "s", KeyRing.single(Keyset.generate()))
    with pytest.raises(KeyUnavailableError):  # MAC key not held: rejected before the store
        other.deserialize(row, COORD)
    team_b_only = make_engine(tmp_path / "s", KeyRing((("team_b_*", Keyset.generate()),)))
    with pytest.raises(KeyUnavailableError, match="team_a_etl"):
        team_b_only.deserialize(row, COORD)
    with pytest.raises(KeyUnavailableError, match="team_a_etl"):
        team_b_only.serialize(VALUES["ndarray"], COORD)  # never stored in plaintext instead
    # Same key id, other secret (a keyset file replaced by mistake): the MAC fails.
    impostor = Keyset.from_json(keyset.to_json().replace(json.loads(keyset.to_json())["keys"][0]["secret"], "A" * 43))
    with pytest.raises(ReferenceSignatureError):
        make_engine(tmp_path / "s", KeyRing.single(impostor)).deserialize(row, COORD)
    # Without signing, the object itself refuses the impostor.
    unsigned = make_engine(tmp_path / "s", KeyRing.single(impostor), sign_references=False)
    with pytest.raises(DecryptionError):
        unsigned.deserialize(row, COORD)
    no_keys = Engine(StashConfig(store_url=f"file://{tmp_path / 's'}", read_ahead=False))
    with pytest.raises(KeyUnavailableError):
        no_keys.deserialize(row, COORD)


def test_rotated_keyset_reads_old_values_and_writes_under_the_new_key(tmp_path, keyset) -> None:
    old = make_engine(tmp_path / "s", KeyRing.single(keyset))
    row1 = old.serialize(VALUES["ndarray"], COORD)
    rotated = keyset.rotated()
    new = make_engine(tmp_path / "s", KeyRing.single(rotated))
    assert np.array_equal(new.deserialize(row1, COORD), VALUES["ndarray"])
    coord2 = XComCoordinate(COORD.dag_id, COORD.run_id, "other", -1, "return_value")
    row2 = new.serialize(VALUES["ndarray"], coord2)
    assert row2["mac"].startswith(rotated.primary_id + ":")
    with pytest.raises(KeyUnavailableError):
        old.deserialize(row2, coord2)


def test_tampered_header_body_and_key_slot(engine) -> None:
    row = engine.serialize(VALUES["bytes"], COORD)
    path = object_path(engine, row)
    original = path.read_bytes()
    layout = read_layout(len(original), lambda o, n: original[o : o + n])
    for offset in (20, layout.body_offset - 60, layout.body_offset + 10, len(original) - 200):
        data = bytearray(original)
        data[offset] ^= 0x04
        path.write_bytes(bytes(data))
        with pytest.raises(IntegrityError):  # DecryptionError is an IntegrityError
            engine.deserialize(row, COORD)
    path.write_bytes(original)
    assert engine.deserialize(row, COORD) == VALUES["bytes"]


def test_key_slot_tampering_is_a_decryption_error(engine) -> None:
    """The slot is outside the root digest (so re-wrapping keeps references valid): GCM guards it."""
    row = engine.serialize(VALUES["bytes"], COORD)
    path = object_path(engine, row)
    data = bytearray(path.read_bytes())
    layout = read_layout(len(data), lambda o, n: bytes(data[o : o + n]))
    data[layout.body_offset - 40] ^= 1  # inside the wrapped data key
    path.write_bytes(bytes(data))
    with pytest.raises(DecryptionError):
        engine.deserialize(row, COORD)


def test_truncated_ciphertext(engine) -> None:
    row = engine.serialize(VALUES["bytes"], COORD)
    path = object_path(engine, row)
    os.truncate(path, path.stat().st_size - 1_100_000)
    with pytest.raises(IntegrityError):
        engine.deserialize(row, COORD)


def test_objects_swapped_between_two_xcoms(engine) -> None:
    coord2 = XComCoordinate(COORD.dag_id, COORD.run_id, "other", -1, "return_value")
    row1 = engine.serialize(VALUES["bytes"], COORD)
    row2 = engine.serialize(b"y" * len(VALUES["bytes"]), coord2)
    p1, p2 = object_path(engine, row1), object_path(engine, row2)
    d1, d2 = p1.read_bytes(), p2.read_bytes()
    p1.write_bytes(d2)
    p2.write_bytes(d1)
    for row, coord in ((row1, COORD), (row2, coord2)):
        with pytest.raises(IntegrityError):
            engine.deserialize(row, coord)


def test_reference_and_object_copied_to_another_dag(tmp_path, engine) -> None:
    row = engine.serialize(VALUES["ndarray"], COORD)
    other = XComCoordinate("team_a_other", "run_1", "extract", -1, "return_value")
    with pytest.raises(ReferenceSignatureError, match="copied"):
        engine.deserialize(row, other)
    # Even with the object copied to the other DAG's place and the reference re-pointed
    # (which needs the MAC key: signing off here), the encryption's scope refuses it.
    unsigned = make_engine(tmp_path / "u", engine.guard.config.keyring, sign_references=False)
    row = unsigned.serialize(VALUES["ndarray"], COORD)
    src = object_path(unsigned, row)
    dst_key = other.object_key()
    dst = Path(unsigned.store.root) / dst_key
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    moved = {**row, "uri": unsigned.store.uri_for(dst_key), "xcom": other.as_dict()}
    with pytest.raises(DecryptionError, match="scope|written for dag_id"):
        unsigned.deserialize(moved, other)


def test_run_scope_binds_the_run(tmp_path, keyset) -> None:
    engine = make_engine(tmp_path / "s", KeyRing.single(keyset), encryption_scope="run", sign_references=False)
    row = engine.serialize(VALUES["bytes"], COORD)
    other_run = XComCoordinate(COORD.dag_id, "run_2", COORD.task_id, -1, COORD.key)
    with pytest.raises(DecryptionError):
        engine.deserialize({**row, "xcom": other_run.as_dict()}, other_run)
    assert engine.deserialize(row, COORD) == VALUES["bytes"]


@pytest.mark.parametrize(
    "edit",
    [
        {"uri": "file:///etc/passwd"},
        {"size": 10},
        {"digest": "sha256:" + "0" * 64},
        {"summary": "harmless"},
        {"xcom": {"dag_id": "team_a_etl", "run_id": "run_1", "task_id": "x", "map_index": -1, "key": "k"}},
        {"readers": {"dag_id": "team_a_etl"}},
    ],
)
def test_edited_references_are_rejected_before_the_store(engine, edit) -> None:
    row = engine.serialize(VALUES["ndarray"], COORD)
    object_path(engine, row).unlink()  # any store access would now be ObjectMissingError
    with pytest.raises(ReferenceSignatureError):
        engine.deserialize({**row, **edit}, COORD)


def test_forged_and_hostile_references(engine) -> None:
    row = engine.serialize(VALUES["ndarray"], COORD)
    forged = {k: v for k, v in row.items() if k != "mac"}
    with pytest.raises(ReferenceSignatureError, match="not signed"):
        engine.deserialize(forged, COORD)
    for uri in ("file:///etc/passwd", "s3://other-bucket/x.xcs", "http://evil/x", engine.store.root_uri + "/../x.xcs"):
        with pytest.raises(InvalidReferenceError):
            engine.deserialize({**forged, "uri": uri}, COORD)
    for bad in ({**row, "mac": row["mac"][:-2] + "AA"}, {**row, "size": "1"}, {**row, "__xcomstash__": 2}):
        with pytest.raises(InvalidReferenceError):
            engine.deserialize(bad, COORD)
    with pytest.raises(KeyUnavailableError):  # a MAC naming a key this worker does not hold
        engine.deserialize({**row, "mac": "k0:" + "A" * 43}, COORD)


def test_unsigned_references_accepted_only_while_migrating(tmp_path, keyset) -> None:
    plain = Engine(StashConfig(store_url=f"file://{tmp_path / 's'}", threshold=0, read_ahead=False))
    row = plain.serialize({"a": 1}, COORD)
    strict = make_engine(tmp_path / "s", KeyRing.single(keyset))
    with pytest.raises(ReferenceSignatureError):
        strict.deserialize(row, COORD)
    migrating = make_engine(
        tmp_path / "s", KeyRing.single(keyset), encrypt=False, unsigned_before=time.time() + 60,
        accept_plaintext_objects=True,
    )
    assert migrating.deserialize(row, COORD) == {"a": 1}
    with pytest.raises(ReferenceSignatureError):  # a MAC that is present must still be right
        migrating.deserialize({**row, "mac": keyset.primary_id + ":" + "A" * 43}, COORD)


def test_purge_refuses_a_forged_reference(engine) -> None:
    victim = engine.serialize(VALUES["ndarray"], COORD)
    forged = {k: v for k, v in victim.items() if k != "mac"}
    other = XComCoordinate(COORD.dag_id, COORD.run_id, "t2", -1, "k")
    assert engine.purge(forged, other) is False
    assert object_path(engine, victim).exists()
    assert engine.purge(victim, COORD) is True
    assert not object_path(engine, victim).exists()


def test_restricted_reads(tmp_path, keyset) -> None:
    producer = make_engine(tmp_path / "s", KeyRing.single(keyset), actor=Actor("team_a_etl", "run_1", "extract"))
    row = producer.serialize(Restricted({"v": 1}, tasks=["load"]), COORD)
    assert row["readers"] == {"dag_id": "team_a_etl", "tasks": ["load"]}  # offloaded even when small
    allowed = make_engine(tmp_path / "s", KeyRing.single(keyset), actor=Actor("team_a_etl", "run_1", "load"))
    assert allowed.deserialize(row, COORD) == {"v": 1}
    for actor in (Actor("team_a_etl", "run_1", "report"), Actor("team_b", "r", "load"), None):
        reader = make_engine(tmp_path / "s", KeyRing.single(keyset), actor=actor)
        with pytest.raises(AccessDeniedError):
            reader.deserialize(row, COORD)


def test_read_scope_dag_by_rule_without_keys(tmp_path) -> None:
    rules = Rules(ValueRule(read_scope="dag"))
    producer = make_engine(tmp_path / "s", None, rules=rules, threshold=1 << 20)
    row = producer.serialize({"small": True}, COORD)
    assert row["readers"] == {"dag_id": "team_a_etl"}
    same_dag = make_engine(tmp_path / "s", None, actor=Actor("team_a_etl", "r", "t"))
    assert same_dag.deserialize(row, COORD) == {"small": True}
    with pytest.raises(AccessDeniedError):
        make_engine(tmp_path / "s", None, actor=Actor("team_b", "r", "t")).deserialize(row, COORD)


def test_type_allowlist_and_size_limit_fail_the_push_naming_the_rule(tmp_path) -> None:
    rules = Rules(ValueRule(max_value_bytes=100_000), parse_dag_policies('[{"dags": "team_a_*", "allowed_types": ["json"]}]'))
    engine = make_engine(tmp_path / "s", None, rules=rules, threshold=64 * 1024)
    assert engine.deserialize(engine.serialize({"ok": 1}, COORD), COORD) == {"ok": 1}
    with pytest.raises(TypeNotAllowedError, match=r"dag_policies\[0\] \(dags='team_a_\*'\)"):
        engine.serialize(np.arange(10), COORD)
    other = XComCoordinate("other", "r", "t", -1, "k")
    engine.serialize(np.arange(10), other)
    with pytest.raises(ValueTooLargeError, match="max_value_bytes of the deployment"):
        engine.serialize(np.zeros(200_000), other)
    with pytest.raises(ValueTooLargeError):
        engine.serialize({"s": "x" * 200_000}, other)
    assert not any(p.name.endswith(".part") for p in (tmp_path / "s").rglob("*"))


def test_sensitive_policies_in_the_engine(tmp_path) -> None:
    value = {"user": "etl", "password": "pg-s3cr3t-Pa55", "note": f"key {AWS}"}
    reject = make_engine(tmp_path / "s", None, rules=Rules(ValueRule(sensitive_data="reject")), threshold=1 << 20)
    with pytest.raises(SensitiveDataError) as err:
        reject.serialize(value, COORD)
    assert "pg-s3cr3t" not in str(err.value) and AWS not in str(err.value)
    mask = make_engine(tmp_path / "s", None, rules=Rules(ValueRule(sensitive_data="mask")), threshold=0)
    row = mask.serialize(value, COORD)
    stored = object_path(mask, row).read_bytes()
    assert b"pg-s3cr3t" not in stored and AWS.encode() not in stored
    assert mask.deserialize(row, COORD) == {"user": "etl", "password": "***", "note": "key ***"}
    inline = make_engine(tmp_path / "s", None, rules=Rules(ValueRule(sensitive_data="mask")), threshold=1 << 20)
    assert inline.serialize(value, COORD) == {"user": "etl", "password": "***", "note": "key ***"}
    assert inline.serialize(AWS, COORD) == "***"
    frame = pd.DataFrame({"n": [1, 2], "contact": ["a@example.com", "none"]})
    masked = inline.deserialize(inline.serialize(frame, COORD), COORD)
    assert list(masked["contact"]) == ["***", "none"]
    registered = make_engine(
        tmp_path / "s", None, rules=Rules(ValueRule(sensitive_data="reject")),
        scanner=Scanner(registered=lambda: __import__("re").compile("hunter2hunter2")),
    )
    with pytest.raises(SensitiveDataError, match="registered-secret"):
        registered.serialize(["x hunter2hunter2 y"], COORD)
    with pytest.raises(SensitiveDataError):
        reject.serialize(b"-----BEGIN PRIVATE KEY-----\nxx", COORD)


def test_audit_events_for_push_pull_purge_denial_and_integrity(tmp_path, keyset) -> None:
    engine = make_engine(tmp_path / "s", KeyRing.single(keyset), actor=Actor("team_a_etl", "run_1", "extract", -1, 2), audit=True)
    row = engine.serialize(VALUES["ndarray"], COORD)
    engine.deserialize(row, COORD)
    with pytest.raises(ReferenceSignatureError):
        engine.deserialize({**row, "size": 1}, COORD)
    path = object_path(engine, row)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        engine.deserialize(row, COORD)
    engine.purge(row, COORD)
    events = list(read_events(engine.store, Query(dag_id="team_a_etl")))
    assert [(e.op, e.outcome) for e in events] == [("push", "ok"), ("pull", "ok"), ("pull", "denied"), ("pull", "failed"), ("purge", "ok")]
    push = events[0]
    assert push.uri == row["uri"] and push.digest == row["digest"] and push.size == row["size"]
    assert push.key_id == keyset.primary_id and push.actor["try_number"] == 2
    assert "IntegrityError" in events[3].error


def test_encryption_without_keys_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="keysets"):
        SecurityConfig(encrypt=True)


def test_partial_reads_of_encrypted_tables_read_whole_and_slice(engine) -> None:
    df = VALUES["pandas"]
    row = engine.serialize(df, COORD)
    part, stats = engine.read_table(row, columns=["x"], rows=(10, 20))
    pd.testing.assert_frame_equal(part, df[["x"]].iloc[10:20])


def test_empty_and_exact_frame_multiple_bodies_round_trip_encrypted(engine) -> None:
    from xcomstash.format.frames import FRAME_SIZE

    for value in (b"", b"x" * FRAME_SIZE, os.urandom(2 * FRAME_SIZE)):
        row = engine.serialize(value, COORD)
        assert engine.deserialize(row, COORD) == value


def test_truncation_to_a_frame_boundary_is_caught_by_the_stream_construction(tmp_path, keyset) -> None:
    """Drop the last frame and rewrite table, footer and reference to match: only the
    last-frame flag in the nonces can tell (what an attacker with DB write access could do)."""
    import hashlib
    import struct

    from xcomstash.format import container
    from xcomstash.format.frames import FRAME_SIZE, pack_table

    engine = make_engine(tmp_path / "s", KeyRing.single(keyset), sign_references=False)
    row = engine.serialize(os.urandom(3 * FRAME_SIZE), COORD)
    path = object_path(engine, row)
    data = path.read_bytes()
    layout = read_layout(len(data), lambda o, n: data[o : o + n])
    frames = layout.frames[:-1]
    body = data[layout.body_offset : layout.body_offset + sum(f.stored_len for f in frames)]
    head = data[: layout.key_slot_offset]
    tail = container.trailer(frames, len(body), sum(f.raw_len for f in frames))
    forged = head + layout.key_slot + body + tail
    path.write_bytes(forged)
    edited = {**row, "size": len(forged), "digest": container.root_digest(head, tail, layout.header.hash)}
    with pytest.raises(DecryptionError, match="last frame"):
        engine.deserialize(edited, COORD)


def test_key_slot_size_is_pinned_between_layout_and_crypto() -> None:
    from xcomstash.format import container
    from xcomstash.security.crypto import stream

    assert container.KEY_SLOT_BYTES == stream.KEY_SLOT_BYTES


def test_inline_values_are_audited_only_when_asked(tmp_path) -> None:
    quiet = make_engine(tmp_path / "s", None, audit=True, threshold=1 << 20)
    quiet.deserialize(quiet.serialize({"a": 1}, COORD), COORD)
    assert list(read_events(quiet.store)) == []
    loud = make_engine(tmp_path / "t", None, audit=True, threshold=1 << 20, audit_inline=True)
    loud.deserialize(loud.serialize({"a": 1}, COORD), COORD)
    assert [(e.op, e.route) for e in read_events(loud.store)] == [("push", "inline"), ("pull", "inline")]


def test_frames_of_an_encrypted_object_verify_without_keys(engine, tmp_path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from xcomstash.format.frames import FrameError, verify_stored_frames

    row = engine.serialize(VALUES["bytes"], COORD)
    path = object_path(engine, row)
    data = path.read_bytes()
    layout = read_layout(len(data), lambda o, n: data[o : o + n])
    with ThreadPoolExecutor(2) as pool:
        verify_stored_frames(layout.frames, layout.body_offset, lambda o, n: data[o : o + n], pool)
        bad = bytearray(data)
        bad[layout.body_offset + 5] ^= 1
        with pytest.raises(FrameError):
            verify_stored_frames(layout.frames, layout.body_offset, lambda o, n: bytes(bad[o : o + n]), pool)


def test_the_producer_can_purge_its_restricted_value(tmp_path, keyset) -> None:
    producer = make_engine(tmp_path / "s", KeyRing.single(keyset), actor=Actor("team_a_etl", "run_1", "extract"))
    row = producer.serialize(Restricted(VALUES["ndarray"], tasks=["load"]), COORD)
    assert producer.purge(row, COORD) is True
    assert not object_path(producer, row).exists()


def test_maintenance_verify_checks_an_encrypted_object_without_keys(engine) -> None:
    from xcomstash.maintenance.verify import CORRUPT, OK, check_object
    from xcomstash.format.reference import Reference

    row = engine.serialize(VALUES["bytes"], COORD)
    ref = Reference.from_json(row)
    assert check_object(engine.store, ref, full=True)[0] == OK
    path = object_path(engine, row)
    data = bytearray(path.read_bytes())
    layout = read_layout(len(data), lambda o, n: bytes(data[o : o + n]))
    data[layout.body_offset + 5] ^= 1
    path.write_bytes(bytes(data))
    assert check_object(engine.store, ref, full=True)[0] == CORRUPT
