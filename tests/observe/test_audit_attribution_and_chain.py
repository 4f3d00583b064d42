"""Audit attribution of refused pulls (filed under the XCom asked for, the row's claim kept
beside it) and the tamper-evident audit log (``xcomstash audit --verify``). Real engine, real
local store, real keyset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.cli import main
from xcomstash.errors import ReferenceSignatureError
from xcomstash.observe import audit
from xcomstash.observe.audit import AuditLog, AuditRecorder, Query, StoreSink, read_events, verify_log
from xcomstash.security.crypto.keyset import KeyRing, Keyset, PURPOSE_AUDIT, write_keyset_file
from xcomstash.security.guard import Guard, SecurityConfig
from xcomstash.security.readers import Expected
from xcomstash.stores import LocalStore

VICTIM = XComCoordinate("victim", "r1", "produce", -1, "return_value")
ATTACKER = XComCoordinate("attacker", "r9", "produce", -1, "return_value")


def secured_engine(store: LocalStore, keyset: Keyset, sink: StoreSink) -> Engine:
    guard = Guard(SecurityConfig(keyring=KeyRing.single(keyset), encrypt=True, sign_references=True))
    recorder = AuditRecorder(AuditLog([sink]))
    return Engine(StashConfig(store_url=store.root_uri, threshold=0, read_ahead=False), store=store, guard=guard, subscribers=[recorder])


def test_denied_pull_is_filed_under_the_xcom_asked_for_not_the_rows_claim(tmp_path) -> None:
    store, keyset = LocalStore(tmp_path / "store"), Keyset.generate()
    engine = secured_engine(store, keyset, StoreSink(store, flush_events=1))
    genuine = engine.serialize(np.arange(1000), ATTACKER)
    # The attacker rewrites the victim's row with a reference that claims the attacker's XCom.
    with pytest.raises(ReferenceSignatureError):
        engine.deserialize(dict(genuine), expected=Expected(**VICTIM.as_dict()))
    engine.flush()
    denied = list(read_events(store, Query(dag_id="victim", outcome="denied")))
    assert len(denied) == 1
    assert denied[0].xcom == VICTIM.as_dict()
    assert denied[0].claimed["dag_id"] == "attacker"
    assert not list(read_events(store, Query(dag_id="attacker", outcome="denied")))


def chained_store(tmp_path: Path, keyset: Keyset) -> LocalStore:
    """Three writers; the second closes its chain (at exit) after three objects."""
    store = LocalStore(tmp_path / "store")
    key = (keyset.primary.id, keyset.primary.subkey(PURPOSE_AUDIT))
    for writer in range(3):
        sink = StoreSink(store, flush_events=2, flush_seconds=3600, chain_key=key)
        for i in range(6):
            sink.write(audit.AuditEvent("push", "ok", {"dag_id": f"d{writer}", "key": str(i)}))
        if writer == 1:
            sink.flush(final=True)
    return store


def objects_of(store: LocalStore, writer_index: int) -> list[Path]:
    files = sorted((Path(store.root) / audit.PREFIX).rglob("*.jsonl"))
    writers = sorted({json.loads(f.read_text().splitlines()[0])["chain"]["writer"] for f in files})
    mine = [f for f in files if json.loads(f.read_text().splitlines()[0])["chain"]["writer"] == writers[writer_index]]
    return sorted(mine, key=lambda f: json.loads(f.read_text().splitlines()[0])["chain"]["seq"])


def verify_cli(store: LocalStore, keyfile: Path, capsys) -> tuple[int, dict]:
    code = main(["audit", "--verify", "--json", "--store-url", store.root_uri, "--keysets", f"file:{keyfile}"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("tamper", ["edit_line", "delete_middle_object", "truncate", "drop_line", "delete_last_of_closed_chain", "forge_unkeyed"])
def test_audit_verify_detects_tampering(tmp_path, capsys, tamper) -> None:
    keyset = Keyset.generate()
    keyfile = write_keyset_file(tmp_path / "keyset.json", keyset)
    store = chained_store(tmp_path, keyset)
    code, report = verify_cli(store, keyfile, capsys)
    assert code == 0 and report["ok"] and report["events"] == 18 and report["writers"] == 3, report

    first, closed = objects_of(store, 0), None
    if tamper == "edit_line":
        text = first[0].read_text().replace('"key": "0"', '"key": "X"')
        first[0].write_text(text)
    elif tamper == "delete_middle_object":
        first[1].unlink()
    elif tamper == "truncate":
        lines = first[0].read_text().splitlines(keepends=True)
        first[0].write_text("".join(lines[:-1]))
    elif tamper == "drop_line":
        lines = first[1].read_text().splitlines(keepends=True)
        first[1].write_text("".join(lines[:1] + lines[2:]))
    elif tamper == "delete_last_of_closed_chain":
        closed = [f for i in range(3) for f in objects_of(store, i)
                  if json.loads(f.read_text().splitlines()[0])["chain"]["final"]]
        assert len(closed) == 1
        closed[0].unlink()
    elif tamper == "forge_unkeyed":  # rewrite an object as a plain (unkeyed) chain of the attacker's
        sink = StoreSink(store, flush_events=100)
        first[0].unlink()
        sink.write(audit.AuditEvent("push", "ok", {"dag_id": "d0", "key": "0"}))
        sink.flush()
    code, report = verify_cli(store, keyfile, capsys)
    if tamper == "delete_last_of_closed_chain":
        # the closed writer's chain is now open, and not because it is still running
        assert any("not the final one" in o for o in report["open_chains"])
        assert len(report["open_chains"]) == 3, report
        return
    assert code == 2 and not report["ok"], report
    assert report["problems"]


def test_audit_events_still_read_from_chained_objects(tmp_path) -> None:
    keyset = Keyset.generate()
    store = chained_store(tmp_path, keyset)
    assert len(list(read_events(store))) == 18
    assert verify_log(store).unverifiable  # keyed chains cannot be checked without the key
