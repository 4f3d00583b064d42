"""Reconcile against real Airflow runs, single cases (SQLite): an object deleted under its
row, a writer killed between upload and row, and reconcile through Airflow's REST API.

The lifecycles on SQLite and PostgreSQL are in test_reconcile_airflow.py.
"""

from __future__ import annotations

import os
import time

import pytest

pytestmark = pytest.mark.airflow

D1, D2 = "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"


def run_ok(env, dag_id: str, logical_date: str):
    run = env.dags_test(dag_id, logical_date=logical_date)
    run.assert_success()
    return run


def test_missing_object_is_reported_with_its_row(make_env) -> None:
    env = make_env("gc-missing", "sqlite")
    run = run_ok(env, "xcs_gc", D1)
    row = next(r for r in env.xcom_rows("xcs_gc", run.run_id, "big"))
    env.object_path(row.value).unlink()
    report = env.xcomstash_json("reconcile", "--grace", "0s", expect=2)
    assert report["missing"]["count"] == 1
    (missing,) = report["missing"]["sample"]
    assert missing["uri"] == row.value["uri"]
    assert missing["xcom"]["task_id"] == "big" and missing["xcom"]["run_id"] == run.run_id


def test_killed_writer_object_survives_the_grace_period_then_is_collected(make_env) -> None:
    env = make_env("gc-killed", "sqlite")
    run = env.dags_test("xcs_gc_killed", logical_date=D1)
    assert run.task_state("killed_writer") != "success"
    assert env.xcom_rows("xcs_gc_killed") == []
    written = env.store_keys()
    assert written, "the killed task wrote its object before dying"
    report = env.xcomstash_json("reconcile", "--grace", "10m")
    assert report["deleted"]["count"] == 0 and report["young_orphans"]["count"] == len(written)
    assert env.store_keys() == written
    # Eleven minutes later (the objects' clock moved back instead of waiting).
    old = time.time() - 11 * 60
    for key in written:
        os.utime(env.store / key, (old, old))
    report = env.xcomstash_json("reconcile", "--grace", "10m")
    assert report["deleted"]["count"] == len(written)
    assert env.store_keys() == set()


def test_reconcile_through_the_rest_api(make_env) -> None:
    """Where only Airflow's API is reachable: rows are read through /api/v2 xcomEntries."""
    import signal
    import subprocess
    import urllib.request

    from tests.harness.airflow import AIRFLOW_BIN
    from tests.harness.servers import free_port

    env = make_env("gc-rest", "sqlite")
    with env.one_process():
        run_ok(env, "xcs_gc_other", D1)
        run_ok(env, "xcs_gc_other", D2)
        run_ok(env, "xcs_gc_other", D1)  # replaces the first run: its objects are orphans
    assert env.store_keys() != env.referenced_keys()
    port = free_port()
    api_env = env.environ({
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API_AUTH__JWT_SECRET": "xcomstash-test-secret",
    })
    log = open(env.root / "api-server.log", "wb")
    server = subprocess.Popen([str(AIRFLOW_BIN), "api-server"], env=api_env, cwd=env.root, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/v2/version", timeout=2).read()
                break
            except OSError:
                assert server.poll() is None, (env.root / "api-server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "api-server did not answer"
                time.sleep(0.5)
        referenced = env.referenced_keys()
        orphans = env.store_keys() - referenced
        report = env.xcomstash_json("reconcile", "--api-url", url, "--grace", "0s")
        assert report["references"] == len([r for r in env.xcom_rows() if r.is_reference])
        assert report["deleted"]["count"] == len(orphans)
        assert env.store_keys() == referenced
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
