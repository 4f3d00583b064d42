"""Pulling another DAG's values from another run (``xcom_pull(dag_id=..., run_id=...)``)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.airflow


def test_pull_from_another_dag_and_run(make_airflow_env) -> None:
    """``airflow dags test`` runs one DAG per process, so the source DAG runs first (its run id
    is read from the metadata DB) and the sink DAG, in a second process and run, is given that
    run id through its run conf."""
    env = make_airflow_env("cross_dag", dags=["xcs_cross_dag.py"])
    with env.one_process():  # two runs, one after the other, in one Airflow process
        source = env.dags_test("xcs_source", logical_date="2026-01-01T00:00:00+00:00")
        source.assert_success()
        sink = env.dags_test("xcs_sink", logical_date="2026-01-02T00:00:00+00:00", conf={"source_run_id": source.run_id})
    sink.assert_success()
    assert env.xcom_value("xcs_sink", sink.run_id, "read_other_dag") == [
        "frame", "settings", "all_parts", "part_4", "own_run_is_empty",
    ]
    # The values came from the source run's objects.
    sources = {
        (e["xcom"]["dag_id"], e["xcom"]["run_id"], e["xcom"]["task_id"], e["xcom"]["map_index"])
        for e in env.trace("pull")
        if e["route"] == "stored"
    }
    assert ("xcs_source", source.run_id, "frame", -1) in sources
    assert {("xcs_source", source.run_id, "part", i) for i in (0, 2, 4)} <= sources
