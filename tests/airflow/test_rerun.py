"""Retries and clears: what Airflow 3.3.2 does with a task's earlier XComs, and what we do.

Airflow deletes a task instance's XComs at the *start* of its next execution: the execution
API's ``ti_run`` lists the keys the task instance already has (``xcom_keys_to_clear``) and
the task runner calls ``XCom.delete`` for each, which calls the backend's ``purge`` with the
row's value before deleting the row. That happens on every try after the first (a retry) and
when a cleared task runs again. ``airflow tasks clear`` itself only resets task states.

Phase 1 (``airflow dags test``): ``flaky`` pushes, fails on try 1, succeeds on try 2.
Phase 2: ``airflow tasks clear`` then ``airflow tasks test`` re-runs ``flaky`` and ``check`` in
the same DAG run (``dags test`` cannot re-run a run: it deletes the run and makes a new one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.airflow.dagfiles import dag_values_module
from tests.harness.airflow import AirflowEnv, DagRunResult, XComRow, read_stored_value

pytestmark = pytest.mark.airflow

DAG_ID = "xcs_rerun"
LOGICAL_DATE = "2026-01-01T00:00:00+00:00"


@dataclass
class Snapshot:
    rows: dict[str, XComRow]  # flaky's rows by key
    objects: set[str]  # flaky's files in the store
    trace: list[dict[str, Any]]  # events since the previous snapshot
    tries: dict[str, tuple[str | None, int]]
    check: Any  # what the consumer returned (None if it has no row)
    digests: dict[str, str]  # array digest of each stored value of flaky, decoded from the store


def snapshot(env: AirflowEnv, run_id: str, seen: int) -> Snapshot:
    V = dag_values_module()
    events = env.trace()
    tis = env.task_instances(DAG_ID, run_id)
    return Snapshot(
        rows={r.key: r for r in env.xcom_rows(DAG_ID, run_id, "flaky")},
        objects={p.rsplit("/", 1)[1] for p in env.store_objects(f"{DAG_ID}/{run_id}/flaky")},
        trace=events[seen:],
        tries={t: (ti.state, ti.try_number) for (t, _), ti in tis.items()},
        check=next((r.value for r in env.xcom_rows(DAG_ID, run_id, "check", "return_value")), None),
        digests={
            r.key: V.array_digest(read_stored_value(env, r.value))
            for r in env.xcom_rows(DAG_ID, run_id, "flaky")
            if r.is_reference
        },
    )


@pytest.fixture(scope="module")
def rerun(make_airflow_env) -> Rerun:
    env = make_airflow_env("rerun", dags=["xcs_rerun.py"])
    # Pinned on the per-XCom layout (objects under dag/run/flaky/); tests/airflow/test_dedup.py
    # covers retries and purge with shared blobs.
    env.config["AIRFLOW__XCOMSTASH__DEDUP"] = "False"
    first = env.dags_test(DAG_ID, logical_date=LOGICAL_DATE, env={"XCS_PHASE": "1"})
    first.assert_success()
    after_retry = snapshot(env, first.run_id, 0)

    # The clear and the two re-runs: one Airflow process (XCS_PHASE is only read by the tasks).
    with env.one_process(env={"XCS_PHASE": "2"}):
        seen = len(env.trace())
        env.tasks_clear(DAG_ID, "flaky", LOGICAL_DATE, downstream=True)
        after_clear = snapshot(env, first.run_id, seen)

        seen = len(env.trace())
        flaky = env.tasks_test(DAG_ID, "flaky", first.run_id)
        check = env.tasks_test(DAG_ID, "check", first.run_id)
    after_rerun = snapshot(env, first.run_id, seen)
    return Rerun(env, first, after_retry, after_clear, flaky, check, after_rerun)


@dataclass
class Rerun:
    env: AirflowEnv
    first: DagRunResult  # phase 1: dags test, with the retry
    after_retry: Snapshot
    after_clear: Snapshot
    flaky: DagRunResult  # phase 2: tasks test of each task
    check: DagRunResult
    after_rerun: Snapshot


def purged_uris(events: list[dict[str, Any]]) -> list[str]:
    return [e["uri"] for e in events if e["op"] == "purge"]


def test_retry_overwrites_the_value_and_purges_the_failed_try(rerun) -> None:
    first, snap = rerun.first, rerun.after_retry
    V = dag_values_module()
    assert snap.tries["flaky"] == ("success", 2)
    assert "XCS-DELIBERATE" in first.task_logs("flaky")[0]
    # The consumer received try 2's value (it checks return value and payload against it).
    assert snap.check == {"phase": "1", "try": 2, "first_run_only": True}

    # Try 2 started by purging try 1's stored objects, then wrote its own.
    ops = [(e["op"], e["xcom"].get("key")) for e in snap.trace if e["route"] == "stored"]
    try1 = ops.index(("push", "first_try_only"))
    try2 = ops.index(("push", "payload"), try1)
    assert sorted(ops[try1 + 1 : try2]) == [("purge", "first_try_only"), ("purge", "payload")]
    for event in snap.trace:
        if event["op"] == "purge":  # the purge names the XCom it removed
            assert (event["xcom"]["dag_id"], event["xcom"]["run_id"], event["xcom"]["task_id"]) == (
                DAG_ID, first.run_id, "flaky"
            )
    payload_uri = snap.rows["payload"].value["uri"]
    assert sorted(purged_uris(snap.trace)) == [
        payload_uri.replace("payload.xcs", "first_try_only.xcs"),
        payload_uri,
    ]

    # One object per coordinate, holding try 2's value; try 1's extra key is gone.
    assert snap.objects == {"payload.xcs", "first_run_only.xcs", "return_value.xcs"}
    assert set(snap.rows) == {"made", "payload", "first_run_only", "return_value"}
    assert snap.rows["made"].value == {"phase": "1", "try": 2}
    assert snap.digests["payload"] == V.array_digest(V.attempt_array("1", 2))
    assert snap.digests["return_value"] == V.array_digest(V.attempt_array("1", 2))


def test_clearing_leaves_rows_and_objects_until_the_task_runs_again(rerun) -> None:
    after_retry, after_clear = rerun.after_retry, rerun.after_clear
    assert after_clear.tries["flaky"][0] is None and after_clear.tries["check"][0] is None
    assert set(after_clear.rows) == set(after_retry.rows)
    assert after_clear.objects == after_retry.objects
    assert after_clear.trace == []  # clearing purged nothing
    assert after_clear.check == after_retry.check  # the consumer's row is still there too


def test_cleared_task_rerun_purges_its_old_objects(rerun) -> None:
    after_retry, snap = rerun.after_retry, rerun.after_rerun
    V = dag_values_module()
    rerun.flaky.assert_ok()
    rerun.check.assert_ok()
    assert snap.tries["flaky"][0] == "success" and snap.tries["check"][0] == "success"

    # Every stored object of the first run was purged when flaky started again ...
    old = {k: r.value["uri"] for k, r in after_retry.rows.items() if r.is_reference}
    assert set(old) == {"payload", "first_run_only", "return_value"}
    assert sorted(purged_uris(snap.trace)) == sorted(old.values())
    # ... so the key the re-run did not push again is gone from the store and the table.
    assert snap.objects == {"payload.xcs", "return_value.xcs"}
    assert set(snap.rows) == {"made", "payload", "return_value"}
    made = snap.rows["made"].value
    assert made["phase"] == "2"
    for key in ("payload", "return_value"):
        assert snap.digests[key] == V.array_digest(V.attempt_array("2", made["try"])), key
    # And the re-run consumer read the new values.
    assert snap.check == {**made, "first_run_only": False}
