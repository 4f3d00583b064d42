"""The same deployment with CeleryExecutor: a Redis broker and two Celery workers started as
separate processes, each with its own xcomstash read cache, as if on two machines.

Values produced on one worker are read on the other; a worker killed (with every process
under it) while uploading has its task retried by Airflow on the surviving worker.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.deployment import checks
from tests.harness.processes import descendants
from tests.deployment.stack import PREFIX, Deployment
from tests.deployment.storeview import unfinished_uploads, uri_key, xcom_rows

pytestmark = [pytest.mark.deployment, pytest.mark.airflow, pytest.mark.s3]

FIGURES: dict[str, object] = {}
_ON = re.compile(r"(XD-DIGEST|XD-VERIFIED) (\S+) .* on (worker\d)")


def _workers_in(text: str) -> set[str]:
    return {m.group(3) for m in _ON.finditer(text)}


def test_values_cross_between_two_workers_with_separate_caches(celery_deployment: Deployment) -> None:
    """Two concurrent workload runs and a cross-DAG pull on two workers: tasks run on both,
    some consumers read values a producer pushed on the other worker, every value verifies,
    and each worker filled only its own read cache."""
    stack = celery_deployment
    api = stack.api
    started = time.monotonic()
    ids = [api.trigger("xd_workload", conf={"seed": s, "rows": 60_000, "fan": 8}) for s in (21, 22)]
    runs = api.wait_runs([("xd_workload", r) for r in ids], timeout=420, processes=stack.processes.values())
    checks.assert_success(stack, *runs)
    cross = api.wait_run("xd_cross", api.trigger("xd_cross", conf={"source_run_id": ids[0]}),
                         timeout=180, processes=stack.processes.values())
    checks.assert_success(stack, cross)
    FIGURES["workload_seconds"] = round(time.monotonic() - started, 1)

    # Where each value was produced and where it was checked, from the task logs.
    produced_on: dict[tuple[str, str], str] = {}
    crossings = 0
    ran_on: set[str] = set()
    for run in runs:
        for task_id in ("make_frame", "make_array", "make_small", "flaky"):
            on = _workers_in(checks.logs_of(stack, run, task_id)[-1])
            assert len(on) == 1, (task_id, on)
            produced_on[(run.run_id, task_id)] = on.pop()
        check_log = checks.logs_of(stack, run, "check")[-1]
        checked_on = _workers_in(check_log)
        ran_on |= checked_on | {produced_on[(run.run_id, t)] for t in ("make_frame", "make_array")}
        crossings += sum(
            1 for t in ("make_frame", "make_array", "make_small", "flaky")
            if produced_on[(run.run_id, t)] not in checked_on
        )
        for i in range(8):
            ran_on |= _workers_in(checks.logs_of(stack, run, "shard", i)[-1])
    assert ran_on == {"worker0", "worker1"}, f"tasks ran on {ran_on} only"
    assert crossings >= 1, "no consumer read a value produced on the other worker"

    rows = checks.verify_values(stack, ["xd_workload", "xd_cross"])
    counts = checks.assert_values_verified(rows, at_least=2 * (5 + 8))
    state = checks.assert_no_dangling(stack)

    caches = {i: _cache_entries(stack, i) for i in (0, 1)}
    assert any(caches.values()), "no worker cached anything it read from S3"
    FIGURES["workload"] = {
        "runs": 3, "values": counts, "cross_worker_reads": crossings,
        "cache_entries": caches, "store": state.summary(),
    }


def test_worker_killed_mid_upload_task_retried_on_the_other_worker(celery_deployment: Deployment) -> None:
    """SIGKILL a whole Celery worker (its main process, pool and task processes) while its
    task's multipart upload is in flight: the scheduler notices the missing heartbeat, Airflow
    retries the task on the surviving worker, and only the retry's object is referenced."""
    stack = celery_deployment
    api = stack.api
    assert stack.proxy is not None
    stack.proxy.latency = 0.5  # widen the window in which the upload is in flight
    try:
        # Three 16 MiB multipart parts, each behind a delayed round trip.
        run_id = api.trigger("xd_big", conf={"nbytes": 48 * 1024 * 1024, "seed": 31})
        prefix = f"{PREFIX}/xd_big/"
        upload = checks.wait_for(
            lambda: next((u for u in unfinished_uploads(stack) if u["key"].startswith(prefix)), None),
            240, "the multipart upload to start", interval=0.1,
        )
        pid = int((stack.shared / f"pid-{run_id}-try1").read_text())
        victim = next(
            name for name, proc in stack.processes.items()
            if name.startswith("worker") and pid in {p for p, _ in descendants(proc.pid)}
        )
        killed_at = time.monotonic()
        stack.processes[victim].kill()
    finally:
        stack.proxy.normal()
    survivor = "worker1" if victim == "worker0" else "worker0"
    alive = [p for n, p in stack.processes.items() if n != victim]
    run = api.wait_run("xd_big", run_id, timeout=300, processes=alive)
    FIGURES["worker_kill_to_success_seconds"] = round(time.monotonic() - killed_at, 1)
    checks.assert_success(stack, run)
    assert run.ti("upload").try_number == 2, "the task of the killed worker was not retried"
    retry_log = checks.logs_of(stack, run, "upload")[-1]
    assert _workers_in(retry_log) == {survivor}

    state = checks.assert_no_dangling(stack)
    killed_key = upload["key"][len(PREFIX) + 1:]
    row = next(r for r in xcom_rows(stack, ["xd_big"])
               if r.run_id == run_id and r.task_id == "upload" and r.key == "return_value")
    referenced = uri_key(row.reference["uri"])
    assert killed_key not in state.objects or killed_key == referenced
    rows = checks.verify_values(stack, ["xd_big"])
    checks.assert_values_verified(rows, at_least=1)
    FIGURES["worker_kill"] = {
        "victim": victim, "retried_on": survivor, "killed_upload_key": killed_key,
        "referenced_key": referenced,
        "killed_upload_left_unfinished": any(u["upload_id"] == upload["upload_id"] for u in state.uploads),
    }
    FIGURES["stack_timings"] = {k: round(v, 1) for k, v in stack.timings.items()}
    print("\nDEPLOYMENT FIGURES (CeleryExecutor)\n" + json.dumps(FIGURES, indent=1, default=str))


def _cache_entries(stack: Deployment, index: int) -> int:
    root = stack.worker_cache_dir(index)
    return sum(1 for p in root.rglob("*") if p.is_file()) if root.exists() else 0
