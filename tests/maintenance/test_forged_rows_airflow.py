"""Forged xcom rows against the maintenance commands that delete, on real Airflow (SQLite,
local store, keysets configured: encrypted values, signed references, durable audit log).

DAG A (``xcs_gc_other``) writes one signed, encrypted value. DAG B (``xcs_gc``) runs once;
then B's rows are rewritten straight in the xcom table, as the REST API's PATCH does:

- ``twin_a``: A's reference with its MAC stripped and ``xcom`` re-pointed at B's row (forged),
- ``twin_b``: A's genuine signed reference copied as is,
- ``small``: a forged reference to an object of the durable audit log.

Then Airflow's purge hook (``XComStashBackend.purge``) is called with those rows, then
``xcomstash retention`` drops B's run, then ``xcomstash reconcile`` runs with forged rows in
place. A's value must still read, the audit log must be whole, and every real deletion must
be an audit event.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from xcomstash.coordinate import XComCoordinate

pytestmark = pytest.mark.airflow

A, B = "xcs_gc_other", "xcs_gc"

PURGE_HOOK = r"""
import json, sys
from airflow.models.xcom import XComModel
from airflow.sdk.execution_time.comms import XComResult
from airflow.settings import Session, configure_orm
from xcomstash.airflow.backend import XComStashBackend
from xcomstash.airflow.settings import engine

configure_orm()
run_id = sys.argv[1]
with Session() as session:
    rows = {r.task_id: r for r in session.query(XComModel).filter_by(dag_id="xcs_gc", run_id=run_id)}
    # The genuine A reference copied into B's row, as Airflow hands that row to the hook.
    XComStashBackend.purge(rows["twin_b"])
    # Airflow's bare XComResult names no XCom: refused (logged), nothing deleted.
    XComStashBackend.purge(XComResult(key="return_value", value=rows["twin_b"].value))
    # A genuine row of B: purged.
    XComStashBackend.purge(rows["keys"])
engine().flush()
print("PURGED")
"""


def audit_files(env) -> dict[str, bytes]:
    base = env.store / "!audit"
    return {str(p.relative_to(env.store)): p.read_bytes() for p in sorted(base.rglob("*.jsonl"))}


def read_with_keys(env, keyfile: Path, ref: dict) -> bytes:
    from xcomstash import Engine, StashConfig
    from xcomstash.coordinate import XComCoordinate
    from xcomstash.security.crypto.keyset import KeyRing, read_keyset_file
    from xcomstash.security.guard import Guard, SecurityConfig

    keyring = KeyRing.single(read_keyset_file(keyfile))
    guard = Guard(SecurityConfig(keyring=keyring, encrypt=True, sign_references=True))
    engine = Engine(StashConfig(store_url=f"file://{env.store}", read_ahead=False), guard=guard)
    try:
        return engine.deserialize(ref, XComCoordinate.from_dict(ref["xcom"]))
    finally:
        engine.close()


@pytest.fixture(scope="module")
def forged(make_env):
    env = make_env("forged", "sqlite")
    keyfile = env.root / "keyset.json"
    env.xcomstash("keys", "generate", str(keyfile)).assert_ok()
    env.config["AIRFLOW__XCOMSTASH__KEYSETS"] = f"file:{keyfile}"
    with env.one_process():  # both runs in one Airflow process (it flushes the audit log on exit)
        a = env.dags_test(A, logical_date="2026-03-01T00:00:00+00:00")
        a.assert_success()
        b = env.dags_test(B, logical_date="2026-03-02T00:00:00+00:00")
        b.assert_success()
    a_ref = env.xcom_value(A, a.run_id, "only")
    assert "mac" in a_ref and a_ref["uri"].endswith("/only/-1/return_value.xcs"), a_ref
    audit = sorted(audit_files(env))
    assert audit, "keysets turn the durable audit log on"
    unsigned = {k: v for k, v in a_ref.items() if k != "mac"}
    b_xcom = lambda task: {"dag_id": B, "run_id": b.run_id, "task_id": task, "map_index": -1, "key": "return_value"}  # noqa: E731
    env.set_xcom_value(B, b.run_id, "twin_a", "return_value", {**unsigned, "xcom": b_xcom("twin_a")})
    env.set_xcom_value(B, b.run_id, "twin_b", "return_value", a_ref)
    audit_uri = f"file://{env.store}/{audit[0]}"
    env.set_xcom_value(B, b.run_id, "small", "return_value", {**unsigned, "uri": audit_uri, "xcom": b_xcom("small")})
    return {"env": env, "keyfile": keyfile, "a": a, "b": b, "a_ref": a_ref}


def test_forged_rows_never_make_purge_retention_or_reconcile_delete_what_they_point_at(forged) -> None:
    env, keyfile, b, a_ref = forged["env"], forged["keyfile"], forged["b"], forged["a_ref"]
    a_object = env.object_path(a_ref)
    a_bytes = a_object.read_bytes()
    audit_before = audit_files(env)
    keys_ref = env.xcom_value(B, b.run_id, "keys")
    big_ref = env.xcom_value(B, b.run_id, "big")

    # 1. Airflow's purge hook, given B's rows (a copied genuine reference; a bare XComResult).
    hook = env.python(PURGE_HOOK, b.run_id)
    hook.assert_ok()
    assert "PURGED" in hook.stdout
    assert a_object.read_bytes() == a_bytes, "a copied reference made the purge hook delete A's object"
    assert "does not say which XCom it is" in hook.output
    assert not env.object_path(keys_ref).exists(), "a genuine row of B is purged"

    # 2. Retention drops B's run: genuine objects go, forged rows are refused (exit 2).
    policies = json.dumps([{"dag_id": B, "keep_last_runs": 0}])
    doc = env.xcomstash_json("retention", "--policies", policies, expect=2)
    assert doc["rows_deleted"] > 0
    assert len(doc["refused"]) == 3, doc["refused"]
    assert not env.object_path(big_ref).exists()
    assert a_object.read_bytes() == a_bytes, "retention deleted A's object through a forged row of B"
    audit_after = audit_files(env)
    for key, data in audit_before.items():
        assert audit_after.get(key, b"")[: len(data)] == data, f"audit object {key} was deleted or changed"

    # 3. Reconcile with forged rows in place (an orphan of B is collected, nothing else).
    env.insert_xcom_row(B, b.run_id, "big", "return_value", {**a_ref, "xcom": {**a_ref["xcom"]}})
    orphan = env.store / XComCoordinate(B, b.run_id, "ghost", -1, "return_value").object_key()
    orphan.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(a_object, orphan)
    report = env.xcomstash_json("reconcile", "--grace", "0s")
    assert report["deleted"]["count"] >= 1 and not orphan.exists()
    assert a_object.read_bytes() == a_bytes
    assert all(key in audit_files(env) for key in audit_before), "reconcile deleted an audit object"

    # A's value still reads, through the engine with the keyset.
    tag = b"other-" + a_ref["xcom"]["run_id"].encode()
    assert read_with_keys(env, keyfile, a_ref) == (tag * (70_000 // len(tag) + 1))[:70_000]

    # Every real deletion is an audit event (the hook's, retention's, reconcile's) ...
    events = [json.loads(line) for line in env.xcomstash("audit", "--json", "--op", "purge").stdout.splitlines()]
    purged = {(e["xcom"].get("dag_id"), e["xcom"].get("task_id"), e["outcome"], e.get("actor", {}).get("command")) for e in events}
    assert (B, "keys", "ok", None) in purged
    assert (B, "big", "ok", "xcomstash retention") in purged
    assert (B, "ghost", "ok", "xcomstash reconcile") in purged
    # ... and every refusal is filed under B's row, with what the row claimed beside it.
    denied = [e for e in events if e["outcome"] == "denied" and e["xcom"]["dag_id"] == B]
    assert {e["xcom"]["task_id"] for e in denied} >= {"twin_a", "twin_b", "small"}
    assert any(e.get("claimed", {}).get("dag_id") == A for e in denied if e["xcom"]["task_id"] == "twin_b")
    assert not [e for e in events if e["outcome"] == "ok" and e["xcom"].get("dag_id") == A]

    # The audit log written by all these processes verifies.
    verified = env.xcomstash("audit", "--verify", "--json")
    assert verified.returncode == 0, verified.describe()
    assert json.loads(verified.stdout)["ok"] is True
