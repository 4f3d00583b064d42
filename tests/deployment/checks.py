"""Assertions the deployment tests share: a run succeeded (else its failed tasks' logs), every
value of some DAGs reads back with its producer's digest, nothing points at a missing object,
and task logs (read through the REST API) say what happened."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Iterable

from tests.harness.api import Run
from tests.deployment.stack import CONN_ID, Deployment
from tests.deployment.storeview import StoreState, snapshot

VERIFIER = Path(__file__).resolve().parent / "verify_values.py"


def failure_report(stack: Deployment, run: Run, limit: int = 4000) -> str:
    assert stack.api is not None
    parts = [f"run {run.dag_id}/{run.run_id} ended {run.state}: not successful {run.not_successful()}"]
    for ti in run.tasks.values():
        if ti.state == "success":
            continue
        for attempt in range(1, max(ti.try_number, 1) + 1):
            try:
                text = stack.api.task_log(run.dag_id, run.run_id, ti.task_id, attempt, ti.map_index)
            except Exception as exc:  # the log may be missing for a task that never started
                text = f"(no log: {exc})"
            parts.append(f"===== {ti.label} try {attempt} ({ti.state}) =====\n{text[-limit:]}")
    return "\n".join(parts)


def assert_success(stack: Deployment, *runs: Run) -> None:
    for run in runs:
        if run.state != "success":
            raise AssertionError(failure_report(stack, run))


def logs_of(stack: Deployment, run: Run, task_id: str, map_index: int = -1) -> list[str]:
    """Every try's log of one task instance, through the REST API."""
    assert stack.api is not None
    ti = run.ti(task_id, map_index)
    return [
        stack.api.task_log(run.dag_id, run.run_id, task_id, attempt, map_index)
        for attempt in range(1, ti.try_number + 1)
    ]


def verify_values(stack: Deployment, dag_ids: Iterable[str]) -> list[dict[str, Any]]:
    """Read back every XCom of ``dag_ids`` in a fresh process configured like a worker, but
    straight from the S3 server and without a read cache; see verify_values.py."""
    assert stack.s3 is not None
    env = {
        "AIRFLOW__XCOMSTASH__CACHE_DIR": "off",
        f"AIRFLOW_CONN_{CONN_ID.upper()}": stack.connection_json(stack.s3.endpoint_url),
    }
    proc = stack.python(VERIFIER.read_text(), *dag_ids, env=env, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"verifier failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["rows"]


def assert_values_verified(rows: list[dict[str, Any]], *, at_least: int = 1) -> dict[str, int]:
    """Every value that has a producer digest reads back with exactly that digest; every row
    reads without error. Returns counts for the report."""
    bad = [r for r in rows if r["read"] != "ok"]
    assert not bad, "values that do not read back:\n" + "\n".join(
        f"{r['dag_id']}/{r['run_id']}/{r['task_id']}[{r['map_index']}] {r['key']}: {r['read']}" for r in bad[:20]
    )
    wrong = [r for r in rows if r["expected"] is not None and not r["verified"]]
    assert not wrong, "values whose digest differs from the producer's:\n" + "\n".join(
        f"{r['dag_id']}/{r['run_id']}/{r['task_id']}[{r['map_index']}] {r['key']}: {r['digest']} != {r['expected']}"
        for r in wrong[:20]
    )
    verified = sum(1 for r in rows if r["verified"])
    assert verified >= at_least, f"only {verified} values carried a producer digest (expected >= {at_least})"
    return {
        "rows": len(rows),
        "verified": verified,
        "references": sum(1 for r in rows if r["reference"]),
        "stored_bytes": sum(r.get("size") or 0 for r in rows if r["reference"]),
    }


def assert_no_dangling(stack: Deployment) -> StoreState:
    """No xcom row names an object the store does not hold, or holds at another size."""
    state = snapshot(stack)
    assert not state.dangling, f"rows point at missing objects: {sorted(state.dangling)[:10]}"
    assert not state.size_mismatches(), f"rows and objects disagree on size: {state.size_mismatches()[:10]}"
    return state


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def producer_digests(log_text: str) -> dict[str, str]:
    """``XD-DIGEST`` lines of a task log: key -> digest."""
    return {m.group(1): m.group(2) for m in re.finditer(r"XD-DIGEST \S+ (\S+) ([0-9a-f]{64})", log_text)}
