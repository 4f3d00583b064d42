"""Dedup through real Airflow (``airflow dags test``): six mapped instances return the same
DataFrame and push it under a second key; one fails after pushing and is retried, so Airflow
purges its XComs through the backend before the retry. Every reference stays readable, and the
store holds each payload once."""

from __future__ import annotations

import pytest

from xcomstash.coordinate import XComCoordinate, parse_link_key

pytestmark = pytest.mark.airflow

DAG_ID = "xcs_dedup"
WIDTH = 6


@pytest.fixture(scope="module")
def dedup_run(make_airflow_env):
    env = make_airflow_env("dedup", dags=["xcs_dedup.py"])
    run = env.dags_test(DAG_ID)
    run.assert_success()
    return env, run


def test_identical_mapped_outputs_share_one_blob_and_all_read_back(dedup_run) -> None:
    env, run = dedup_run
    assert run.task_state("same_table", 0) == "success"
    rows = [r for r in env.xcom_rows(DAG_ID, run.run_id, "same_table") if r.is_reference]
    assert sorted((r.map_index, r.key) for r in rows) == sorted(
        (i, k) for i in range(WIDTH) for k in ("return_value", "also_shared")
    )
    # one payload, so one object under both keys and all six map indexes
    assert len({r.value["uri"] for r in rows}) == 1
    blobs = [k for k in env.store_objects(f"{DAG_ID}/") if "/.blobs/" in k and "/same_table/" not in k]
    assert len(blobs) == 1
    assert env.object_path(rows[0].value).relative_to(env.store).as_posix() == blobs[0]


def test_every_xcom_keeps_its_link_after_the_retry_purged_one(dedup_run) -> None:
    env, run = dedup_run
    rows = [r for r in env.xcom_rows(DAG_ID, run.run_id, "same_table") if r.is_reference]
    expected = {
        XComCoordinate(DAG_ID, run.run_id, "same_table", r.map_index, r.key).link_key(r.value["digest"])
        for r in rows
    }
    assert env.store_links(f"{DAG_ID}/") >= expected
    purges = [e for e in env.trace() if e["op"] == "purge" and e["xcom"].get("task_id") == "same_table"]
    # the retry of map index 0 purged what its first try pushed, naming the XCom
    assert [(e["xcom"]["map_index"], e["xcom"]["key"]) for e in purges] == [(0, "also_shared")]
    # every link names an XCom that has a row: nothing stale, nothing missing
    linked = {
        (p.task_id, p.map_index, p.key)
        for p in map(parse_link_key, env.store_links(f"{DAG_ID}/"))
        if p and p.task_id == "same_table"
    }
    assert linked == {("same_table", r.map_index, r.key) for r in rows}
