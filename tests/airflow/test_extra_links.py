"""Operator extra links in exclusive mode, as the UI gets them from a real API server.

One Airflow env (SQLite, ``exclusive = True``) and one ``airflow api-server`` for the module.
``airflow dags test xcs_links`` runs alongside it: its TriggerDagRunOperator triggers a run and
waits for it; while it waits, the API server must serve the "Triggered DAG" link as the URL
(the row the operator pushed through xcomstash), not as a reference. The test then marks the
triggered run successful through the REST API, which ends the wait and the DAG run.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

from tests.harness.airflow import AIRFLOW_BIN, MARKER, AirflowEnv, DagRunResult
from tests.harness.api import AirflowAPI, APIError
from tests.harness.processes import Process, spawn
from tests.harness.servers import LOOPBACK, free_port

pytestmark = pytest.mark.airflow

DAG_ID, TARGET, TRIGGERED = "xcs_links", "xcs_links_target", "xcs_links_triggered"
TRIGGER_LINK_KEY = "_link_TriggerDagRunLink"
TRIGGERED_URL_TAIL = f"/dags/{TARGET}/runs/{TRIGGERED}"
RUNBOOK_URL = "https://docs.example.com/runbooks/xcs_links?step=2"


@dataclass
class LinksRun:
    env: AirflowEnv
    api: AirflowAPI
    run: DagRunResult
    #: What the API server served, and what the row held, while the operator waited.
    links_while_waiting: dict[str, Any] = field(default_factory=dict)
    row_while_waiting: Any = None


def _dags_test(env: AirflowEnv, out: dict[str, Any]) -> None:
    try:
        out["run"] = env.dags_test(DAG_ID)
    except BaseException as exc:  # handed to the test thread
        out["error"] = exc


def _wait_for_link(api: AirflowAPI, run_id: str, server: Process, runner: threading.Thread) -> dict[str, Any]:
    """The trigger task's links once the API server has one to serve (its row exists)."""
    deadline = time.monotonic() + 120
    while True:
        assert server.alive(), server.describe(80)
        assert runner.is_alive(), "airflow dags test ended before the trigger task waited"
        try:
            links = api.extra_links(DAG_ID, run_id, "trigger")
        except APIError:  # the task instance is not there yet
            links = {}
        if links.get("Triggered DAG"):
            return links
        assert time.monotonic() < deadline, f"no Triggered DAG link after 120 s: {links}"
        time.sleep(0.3)


def _wait_for_triggered_run(api: AirflowAPI, runner: threading.Thread) -> None:
    """The run the operator triggers exists (its link may be pushed before the run is
    committed, and a busy machine shows the gap)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            api.get(f"/dags/{TARGET}/dagRuns/{TRIGGERED}")
            return
        except APIError:
            pass
        assert runner.is_alive(), "airflow dags test ended before the triggered run appeared"
        assert time.monotonic() < deadline, "the triggered run did not appear in 120 s"
        time.sleep(0.3)


def _running_run_id(env: AirflowEnv) -> str:
    deadline = time.monotonic() + 120
    while True:
        rows = env.query("SELECT run_id FROM dag_run WHERE dag_id = ?", (DAG_ID,))
        if rows:
            return rows[0]["run_id"]
        assert time.monotonic() < deadline, "airflow dags test created no run in 120 s"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def links_run(make_airflow_env) -> Iterator[LinksRun]:
    env = make_airflow_env("links", dags=["xcs_links.py"])
    env.config["AIRFLOW__XCOMSTASH__EXCLUSIVE"] = "True"
    port = free_port()
    server = spawn(
        "api-server", [str(AIRFLOW_BIN), "api-server", "--apps", "core"],  # dags test has its own execution API
        env.environ({
            "AIRFLOW__API__HOST": LOOPBACK,
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API_AUTH__JWT_SECRET": "xcomstash-test-secret",
        }),
        env.logs, cwd=env.root,
    )
    api = AirflowAPI(f"http://{LOOPBACK}:{port}")
    out: dict[str, Any] = {}
    runner = threading.Thread(target=_dags_test, args=(env, out), daemon=True)
    started, timings = time.monotonic(), {}
    try:
        runner.start()  # the DAG run and the API server start side by side
        api.wait_healthy(timeout=180, processes=[server])
        timings["api_ready_s"] = time.monotonic() - started
        run_id = _running_run_id(env)
        links = _wait_for_link(api, run_id, server, runner)
        timings["link_served_s"] = time.monotonic() - started
        (row,) = env.xcom_rows(DAG_ID, run_id, "trigger", TRIGGER_LINK_KEY)
        _wait_for_triggered_run(api, runner)
        api.set_run_state(TARGET, TRIGGERED, "success")  # ends the operator's wait
        runner.join(timeout=180)
        assert not runner.is_alive(), "airflow dags test did not end after the triggered run succeeded"
        timings["run_done_s"] = time.monotonic() - started
        if "error" in out:
            raise out["error"]
        yield LinksRun(env, api, out["run"], links, row.value)
    finally:
        if runner.is_alive():  # a check failed while the operator waited: end its wait
            try:
                api.set_run_state(TARGET, TRIGGERED, "failed")
            except Exception:
                pass
            runner.join(timeout=120)
        server.kill()  # nothing to shut down cleanly: the env is thrown away
        print(f"\nextra links: timings {({k: round(v, 1) for k, v in timings.items()})}")


def test_the_triggered_dag_link_is_the_url_while_the_operator_waits(links_run: LinksRun) -> None:
    link = links_run.links_while_waiting["Triggered DAG"]
    assert isinstance(link, str) and link.endswith(TRIGGERED_URL_TAIL), links_run.links_while_waiting
    assert MARKER not in link
    assert links_run.row_while_waiting == link  # the row the operator pushed through xcomstash


def test_the_run_ends_and_every_link_is_served_as_its_url(links_run: LinksRun) -> None:
    run, api = links_run.run, links_run.api
    run.assert_success()
    trigger = api.extra_links(DAG_ID, run.run_id, "trigger")
    assert trigger["Triggered DAG"].endswith(TRIGGERED_URL_TAIL)
    assert api.extra_links(DAG_ID, run.run_id, "runbook") == {"Runbook": RUNBOOK_URL}


def test_only_link_rows_stay_plain_in_exclusive_mode(links_run: LinksRun) -> None:
    rows = links_run.env.xcom_rows(DAG_ID, links_run.run.run_id)
    plain = {(r.task_id, r.key) for r in rows if not r.is_reference}
    assert plain == {("trigger", TRIGGER_LINK_KEY), ("runbook", "_link_RunbookLink")}
    stored = {(r.task_id, r.key) for r in rows if r.is_reference}
    assert {("trigger", "trigger_run_id"), ("runbook", "return_value")} <= stored


def test_a_task_pulls_the_link_and_what_is_no_link_is_refused_under_a_link_key(links_run: LinksRun) -> None:
    log = links_run.run.task_log("check_links")
    pulled = [line for line in log.splitlines() if "XCS-LINK-PULLED" in line]
    assert pulled and pulled[0].rstrip().endswith(TRIGGERED_URL_TAIL), pulled
    assert "XCS-LINK-REFUSED big ExtraLinkValueError" in log
    assert "XCS-LINK-REFUSED binary ExtraLinkValueError" in log
    assert "XCS-LINK-ACCEPTED" not in log
    keys = {r.key for r in links_run.env.xcom_rows(DAG_ID, links_run.run.run_id, "check_links")}
    assert not keys & {"_link_big", "_link_binary"}


def test_link_pushes_and_pulls_are_traced_on_their_own_route(links_run: LinksRun) -> None:
    link_events = [
        (e["op"], e["xcom"]["task_id"], e["xcom"]["key"]) for e in links_run.env.trace() if e["route"] == "link"
    ]
    assert ("push", "trigger", TRIGGER_LINK_KEY) in link_events
    assert ("pull", "trigger", TRIGGER_LINK_KEY) in link_events
    assert all(key.startswith("_link_") for _, _, key in link_events)
