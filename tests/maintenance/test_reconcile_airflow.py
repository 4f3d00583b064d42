"""Reconcile against real Airflow runs, on SQLite and on a real PostgreSQL server.

Airflow deletes xcom rows without calling the backend when ``airflow dags test`` replaces a
run with the same logical date, when a DAG is deleted (``airflow dags delete``) and in
``airflow db clean``; each leaves objects behind. After reconcile the store must hold exactly
the objects (and dedup links) that the remaining rows reference.

The single cases (a missing object, a killed writer, reconcile through the REST API) are in
test_reconcile_cases_airflow.py, so that pytest-xdist runs them beside these.
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.airflow

D1, D2, D3 = "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"


def run_ok(env, dag_id: str, logical_date: str):
    run = env.dags_test(dag_id, logical_date=logical_date)
    run.assert_success()
    return run


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def lifecycle(request, make_env):
    """Runs of two DAGs, then three ways Airflow drops rows behind the backend's back."""
    env = make_env(f"gc-{request.param}", request.param)
    with env.one_process():  # five commands in a row: one Airflow process
        first = run_ok(env, "xcs_gc", D1)
        run_ok(env, "xcs_gc", D2)
        run_ok(env, "xcs_gc_other", D1)
        assert env.store_keys() == env.referenced_keys(), "before any deletion the store is exactly what rows reference"
        # 1. dags test on an existing logical date replaces the run: its rows go, objects stay.
        run_ok(env, "xcs_gc", D1)
        # 2. airflow dags delete drops every row of a DAG.
        env.airflow("dags", "delete", "xcs_gc_other", "--yes").assert_ok()
    return env, first


def test_dry_run_reports_the_orphans_and_deletes_nothing(lifecycle) -> None:
    env, first = lifecycle
    before = env.store_keys()
    orphans = before - env.referenced_keys()
    assert orphans, "the fixture left orphans"
    report = env.xcomstash_json("reconcile", "--dry-run", "--grace", "0s")
    assert env.store_keys() == before
    assert report["dry_run"] is True
    assert report["orphans"]["count"] == len(orphans)
    assert report["orphans"]["bytes"] == sum(env.store_files()[k] for k in orphans)
    assert set(report["orphans"]["by_dag"]) == {"xcs_gc", "xcs_gc_other"}
    assert report["live"]["count"] == len(before) - len(orphans)
    assert report["missing"]["count"] == 0
    assert report["deleted"]["count"] == 0
    assert report["orphans"]["oldest"] is not None
    assert report["summary"].startswith("reconcile (dry run):")


def test_grace_period_keeps_recent_orphans(lifecycle) -> None:
    env, _ = lifecycle
    before = env.store_keys()
    report = env.xcomstash_json("reconcile", "--grace", "1h")
    assert env.store_keys() == before
    assert report["deleted"]["count"] == 0
    assert report["young_orphans"]["count"] == len(before - env.referenced_keys())


def test_reconcile_leaves_exactly_the_referenced_objects_and_is_idempotent(lifecycle) -> None:
    env, _ = lifecycle
    referenced = env.referenced_keys()
    orphans = env.store_keys() - referenced
    report = env.xcomstash_json("reconcile", "--grace", "0s")
    assert report["deleted"]["count"] == len(orphans)
    assert env.store_keys() == referenced
    again = env.xcomstash_json("reconcile", "--grace", "0s")
    assert again["deleted"]["count"] == 0 and again["orphans"]["count"] == 0
    assert env.store_keys() == referenced
    # Every remaining row still reads back through the engine.
    from tests.harness.airflow import read_stored_value

    for row in env.xcom_rows():
        if row.is_reference:
            assert isinstance(read_stored_value(env, row.value), bytes)


def test_db_clean_then_reconcile(lifecycle) -> None:
    env, _ = lifecycle
    with env.one_process():
        run_ok(env, "xcs_gc", D3)
        cut = time.strftime("%Y-%m-%d %H:%M:%S+00:00", time.gmtime(time.time() + 5))
        env.airflow("db", "clean", "--clean-before-timestamp", cut, "-t", "xcom", "--skip-archive", "--yes").assert_ok()
    assert env.xcom_rows() == []
    assert env.store_keys(), "db clean left the objects behind"
    env.xcomstash_json("reconcile", "--grace", "0s")
    assert env.store_keys() == set()
