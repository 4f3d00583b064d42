"""Key rotation against a real Airflow metadata database (PostgreSQL; the row update it relies
on also on SQLite).

The report: on PostgreSQL ``keys rewrap`` re-wrapped the objects, then crashed re-signing
the references ("FOR UPDATE cannot be applied to the nullable side of an outer join"); once
the old key was removed those values failed with ``KeyUnavailableError``.

Here the whole two-step rotation runs through the CLI on values written by a real DAG run
(encrypted, signed), and every value is read back at every intermediate point, each one a
moment at which an operator's run may stop:

1. new key added, not primary;  2. promoted;  3. some objects re-wrapped, no reference
re-signed;  4. every reference re-signed, one object still under the old key;  5. a run of
the DAG "in progress": its objects are left alone;  6. complete;  then the old key is removed
(refused at 3, 4 and 5, where something still needs it) and a real DAG run reads the values
with the new key only. Re-encryption (fresh data keys) follows, with its audit events, and a
genuine reference copied into another row is neither re-signed nor re-encrypted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.airflow.dagfiles import DAGS_SOURCE, SHARED_DAG_MODULES
from tests.harness.airflow import AIRFLOW_BIN, AirflowEnv, CommandResult

pytestmark = [
    pytest.mark.airflow,
    pytest.mark.skipif(not AIRFLOW_BIN.exists(), reason="Airflow is not installed in .venv"),
]

SOURCE, SINK = "xcs_sec_source", "xcs_sec_sink"
DAGS = [DAGS_SOURCE / name for name in (*SHARED_DAG_MODULES, "xcs_security.py")]


def _json(result: CommandResult) -> dict[str, Any]:
    out = result.stdout
    return json.loads(out[out.index("{") : out.rindex("}") + 1])


def _keyset(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def ref_rows(env: AirflowEnv, run_id: str | None = None) -> list[Any]:
    """The source DAG's rows that hold references (its other rows are task return values
    that the harness's column decoding does not cover on PostgreSQL)."""
    return [r for task in ("produce", "restricted") for r in env.xcom_rows(SOURCE, run_id, task) if r.is_reference]


def read_all(env: AirflowEnv, keyfile: Path, run_ids: list[str]) -> dict[tuple[str, str], bytes]:
    """Every stored value of the source runs, read through the engine's pull path with the
    keyset the file holds now (as a worker would): MAC, expected XCom, digest, decryption."""
    from xcomstash import Engine, StashConfig, XComCoordinate
    from xcomstash.security.crypto.keyset import KeyRing, read_keyset_file
    from xcomstash.security.guard import Guard, SecurityConfig
    from xcomstash.security.readers import Actor

    out = {}
    for run_id in run_ids:
        guard = Guard(
            SecurityConfig(keyring=KeyRing.single(read_keyset_file(keyfile)), encrypt=True, sign_references=True),
            actor=lambda: Actor(SOURCE, run_id, "read_allowed"),
        )
        engine = Engine(StashConfig(store_url=f"file://{env.store}", read_ahead=False), guard=guard)
        for row in ref_rows(env, run_id):
            if row.key == "copied":
                continue
            c = XComCoordinate(row.dag_id, row.run_id, row.task_id, row.map_index, row.key)
            out[(run_id, f"{row.task_id}/{row.key}")] = np.asarray(engine.deserialize(row.value, c)).tobytes()
        engine.close()
    return out


def slot_keys(env: AirflowEnv) -> dict[str, str]:
    """Object key -> the key id its key slot names."""
    from xcomstash.format.container import read_layout
    from xcomstash.security.crypto.stream import slot_key_id

    out = {}
    for rel in env.store_objects():
        if not rel.endswith(".xcs"):
            continue
        data = (env.store / rel).read_bytes()
        layout = read_layout(len(data), lambda o, n: data[o : o + n])
        if layout.key_slot is not None:
            out[rel] = slot_key_id(layout.key_slot)
    return out


def mac_keys(env: AirflowEnv) -> dict[str, str]:
    return {
        f"{r.run_id}/{r.task_id}/{r.key}": r.value["mac"].partition(":")[0]
        for r in ref_rows(env)
    }


@pytest.mark.parametrize("database", ["postgres"])
def test_two_step_rotation_rewrap_and_remove_keep_every_value_readable(make_airflow_env, database) -> None:
    env = make_airflow_env(f"rotation-{database}", DAGS, database)
    keyfile = env.root / "keyset.json"
    env.xcomstash("keys", "generate", str(keyfile)).assert_ok()
    env.config["AIRFLOW__XCOMSTASH__KEYSETS"] = f"file:{keyfile}"
    old = _keyset(keyfile)["primary"]
    with env.one_process():
        first = env.dags_test(SOURCE, logical_date="2026-03-01T00:00:00+00:00")
        busy_run = env.dags_test(SOURCE, logical_date="2026-03-02T00:00:00+00:00")
    for run in (first, busy_run):
        assert run.task_state("produce") == "success", run.task_log("produce")[-3000:]
        assert run.task_state("restricted") == "success", run.task_log("restricted")[-3000:]
    # The statement that failed in the report, alone, on this PostgreSQL installation (on
    # SQLite: test_row_compare_and_set_works_on_sqlite); it leaves the row as it was.
    assert_row_compare_and_set(env, first.run_id)
    runs = [first.run_id, busy_run.run_id]
    expected = read_all(env, keyfile, runs)
    assert len(expected) == 12  # 5 values of produce (not "copied") + 1 restricted, per run
    # A genuine reference copied into another row of the same run: never re-signed.
    copied = env.xcom_value(SOURCE, first.run_id, "produce", "first")
    env.set_xcom_value(SOURCE, first.run_id, "produce", "copied", copied)

    # 1. add: the primary stays; 2. promote.
    env.xcomstash("keys", "add", str(keyfile)).assert_ok()
    (new,) = set(k["id"] for k in _keyset(keyfile)["keys"]) - {old}
    assert _keyset(keyfile)["primary"] == old
    assert read_all(env, keyfile, runs) == expected
    env.xcomstash("keys", "promote", str(keyfile), new).assert_ok()
    assert read_all(env, keyfile, runs) == expected

    # 3. objects of one task re-wrapped, references untouched (an interrupted run).
    from xcomstash import XComCoordinate

    prefix = XComCoordinate(SOURCE, first.run_id, "produce", -1, "x").run_prefix() + "/produce/"
    produce_objects = sorted(k for k in slot_keys(env) if k.startswith(prefix))
    assert len(produce_objects) == 6
    step3 = env.xcomstash("keys", "rewrap", "--prefix", prefix, "--references", "skip")
    assert step3.returncode == 0, step3.describe()
    assert _json(step3)["rewrapped"] == 6
    assert set(mac_keys(env).values()) == {old}
    assert read_all(env, keyfile, runs) == expected
    refused = env.xcomstash("keys", "remove", str(keyfile), old)
    assert refused.returncode == 1 and "still needed" in refused.stderr, refused.describe()
    assert old in {k["id"] for k in _keyset(keyfile)["keys"]}

    # 4. every reference re-signed (the step that crashed on PostgreSQL), objects of other
    # tasks still under the old key. The copied row is refused and left alone.
    step4 = env.xcomstash("keys", "rewrap", "--prefix", "nothing-here/", "--references", "db")
    assert step4.returncode == 1, step4.describe()  # the copied row is reported
    summary4 = _json(step4)
    assert summary4["references_resigned"] == 13, step4.describe()
    assert len(summary4["references_failed"]) == 1 and "copied" in summary4["references_failed"][0]["xcom"]
    assert "copied into another" in summary4["references_failed"][0]["error"]
    macs = mac_keys(env)
    assert {k: v for k, v in macs.items() if not k.endswith("/copied")} == {k: new for k in macs if not k.endswith("/copied")}
    assert read_all(env, keyfile, runs) == expected
    assert env.xcomstash("keys", "remove", str(keyfile), old).returncode == 1

    # 5. a run in progress (a retry may be writing its objects): left alone, reported busy.
    env.execute("UPDATE dag_run SET state = 'running' WHERE dag_id = ? AND run_id = ?", (SOURCE, busy_run.run_id))
    state = env.root / "rewrap-state.json"
    step5 = env.xcomstash("keys", "rewrap", "--state", str(state))
    summary5 = _json(step5)
    assert step5.returncode == 1 and summary5["busy_runs_skipped"] == 7 and summary5["run_states_checked"], step5.describe()
    assert summary5["rewrapped"] == 1  # the restricted value of the first run
    busy_objects = {k: v for k, v in slot_keys(env).items() if k not in produce_objects and v == old}
    assert len(busy_objects) == 7
    assert read_all(env, keyfile, runs) == expected
    assert env.xcomstash("keys", "remove", str(keyfile), old).returncode == 1

    # 6. the run finished: the next run (resuming from its checkpoint) completes.
    env.execute("UPDATE dag_run SET state = 'success' WHERE dag_id = ? AND run_id = ?", (SOURCE, busy_run.run_id))
    step6 = env.xcomstash("keys", "rewrap", "--state", str(state))
    summary6 = _json(step6)
    assert summary6["rewrapped"] == 7 and summary6["busy_runs_skipped"] == 0 and summary6["failed"] == []
    assert set(slot_keys(env).values()) == {new}
    assert read_all(env, keyfile, runs) == expected

    # Nothing needs the old key now: remove succeeds, and real tasks read with the new key only.
    removed = env.xcomstash("keys", "remove", str(keyfile), old)
    assert removed.returncode == 0, removed.describe()
    assert [k["id"] for k in _keyset(keyfile)["keys"]] == [new]
    assert read_all(env, keyfile, runs) == expected
    sink = env.dags_test(
        SINK, logical_date="2026-03-05T00:00:00+00:00",
        conf={"source_run_id": first.run_id, "keys": ["first", "second", "edited"]},
    )
    for key in ("first", "second", "edited"):
        assert sink.task_state(f"read_{key}") == "success", sink.task_log(f"read_{key}")[-3000:]

    # Re-encryption: fresh data keys, new objects, old ones gone, rows re-signed, audited.
    before_objects = set(slot_keys(env))
    before_rows = {f"{r.run_id}/{r.task_id}/{r.key}": r.value for r in ref_rows(env)}
    reenc = env.xcomstash("keys", "reencrypt", "--state", str(env.root / "reencrypt-state.json"))
    summary = _json(reenc)
    assert reenc.returncode == 1, reenc.describe()  # the copied row is refused
    assert summary["reencrypted"] == 13 and len(summary["failed"]) == 1 and "copied" in summary["failed"][0]["xcom"]
    after_rows = {f"{r.run_id}/{r.task_id}/{r.key}": r.value for r in ref_rows(env)}
    for name, ref in after_rows.items():
        if name == f"{first.run_id}/produce/copied":
            assert ref == before_rows[name]
            continue
        assert ref["digest"] != before_rows[name]["digest"] and ref["uri"] != before_rows[name]["uri"]
        assert ref["mac"].startswith(new + ":")
    # Every old object was deleted, except the one no valid row references any more (the
    # copied-over row's own object, left for reconcile).
    orphan = XComCoordinate(SOURCE, first.run_id, "produce", -1, "copied").object_key()
    assert before_objects & set(slot_keys(env)) == {orphan}
    assert read_all(env, keyfile, runs) == expected
    audit = env.xcomstash("audit", "--op", "reencrypt", "--json")
    assert audit.returncode == 0, audit.describe()
    events = [json.loads(line) for line in audit.stdout.splitlines() if line.strip()]
    assert sum(1 for e in events if e["outcome"] == "ok") == 13
    assert sum(1 for e in events if e["outcome"] == "failed") == 1


CAS = """
import json, sys
from xcomstash.airflow.row_sources import DatabaseRows
from xcomstash.coordinate import XComCoordinate
rows = DatabaseRows()
c = XComCoordinate(*json.loads(sys.argv[1]))
exists, value = rows.get_value(c)
assert exists
print(json.dumps([rows.replace_value(c, {"not": "what it holds"}, value), rows.replace_value(c, value, value)]))
"""


def assert_row_compare_and_set(env: AirflowEnv, run_id: str) -> None:
    """The statement that failed in the report ("FOR UPDATE cannot be applied to the nullable
    side of an outer join"), alone: a stale expectation changes nothing, a current one sets."""
    result = env.python(CAS, json.dumps([SOURCE, run_id, "produce", -1, "first"]))
    assert result.returncode == 0, result.describe()
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [False, True]


def test_row_compare_and_set_works_on_sqlite(make_airflow_env) -> None:
    """The compare-and-set on SQLite (on PostgreSQL it runs in the rotation test above, on that
    test's installation: one PostgreSQL installation, one fork server, fewer for the file)."""
    env = make_airflow_env("cas-sqlite", DAGS, "sqlite")
    keyfile = env.root / "keyset.json"
    env.xcomstash("keys", "generate", str(keyfile)).assert_ok()
    env.config["AIRFLOW__XCOMSTASH__KEYSETS"] = f"file:{keyfile}"
    run = env.dags_test(SOURCE, logical_date="2026-03-01T00:00:00+00:00")
    assert run.task_state("produce") == "success", run.task_log("produce")[-3000:]
    assert_row_compare_and_set(env, run.run_id)
