"""A real deployment with LocalExecutor: scheduler, DAG processor and API server as separate
processes on PostgreSQL, xcomstash storing to SeaweedFS S3 through a fault proxy.

The tests share one deployment (started once for this module) and run in file order: the
workload first, then the faults, then the soak, whose final check covers every DAG run the
module made (after the store was stopped, slowed, killed into and corrupted).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest

from tests.deployment import checks
from tests.harness.processes import pid_alive
from tests.deployment.stack import (
    PREFIX,
    S3_CONNECT_TIMEOUT_S,
    S3_MAX_ATTEMPTS,
    S3_READ_TIMEOUT_S,
    CONN_ID,
    Deployment,
)
from tests.deployment.storeview import corrupt, snapshot, unfinished_uploads, uri_key, xcom_rows

pytestmark = [pytest.mark.deployment, pytest.mark.airflow, pytest.mark.s3]

#: Width of the mapped fan-out: well past the fan-in's read-ahead window (8 values), so the
#: lazy sequence reads ahead, refills the window and runs off its end.
FAN = 12
#: Delay of every store response in the latency test: below the read timeout (S3_READ_TIMEOUT_S).
LATENCY_S = 1.0
#: The value the killed task uploads: three multipart parts (xcomstash's S3 parts are 16 MiB),
#: so the upload is in flight over several delayed round trips while the test kills the task.
BIG_NBYTES = 48 * 1024 * 1024
#: Figures collected across the module, printed at the end of the soak.
FIGURES: dict[str, object] = {}


def _store_error_in(text: str) -> bool:
    return "StoreUnavailableError" in text or "StoreReadError" in text


# ------------------------------------------------------------------------------ workload


@pytest.mark.timeout(900)  # includes starting the deployment
def test_workload_fan_out_concurrent_runs_and_cross_dag_pull(local_deployment: Deployment) -> None:
    """A FAN-wide mapped fan-out with fan-in, two more runs of the same DAG at the same time,
    a task that fails once and succeeds on retry, then another DAG pulling the values: every
    consumer checks the digests, and the values are checked again out of band."""
    stack = local_deployment
    api = stack.api
    started = time.monotonic()
    wide = api.trigger("xd_workload", conf={"seed": 1, "rows": 100_000, "fan": FAN})
    side = [api.trigger("xd_workload", conf={"seed": s, "rows": 40_000, "fan": 3, "hold": 5}) for s in (2, 3)]
    runs = api.wait_runs([("xd_workload", r) for r in (wide, *side)], timeout=480,
                         processes=stack.processes.values())
    checks.assert_success(stack, *runs)
    cross = api.wait_run("xd_cross", api.trigger("xd_cross", conf={"source_run_id": side[0]}),
                         timeout=180, processes=stack.processes.values())
    checks.assert_success(stack, cross)
    FIGURES["workload_seconds"] = round(time.monotonic() - started, 1)

    # The fan-out really was FAN wide, and the fan-in saw all of it.
    shards = [ti for (task_id, _), ti in runs[0].tasks.items() if task_id == "shard"]
    assert len(shards) == FAN and all(ti.state == "success" for ti in shards)
    combine_log = "\n".join(checks.logs_of(stack, runs[0], "combine"))
    assert combine_log.count("XD-VERIFIED shard[") == FAN

    # The two small runs overlapped in time (concurrent runs of one DAG).
    infos = [api.run_state("xd_workload", r) for r in side]
    assert infos[0]["start_date"] < infos[1]["end_date"] and infos[1]["start_date"] < infos[0]["end_date"]

    # The flaky task failed its first try and succeeded on its second, in every run.
    for run in runs:
        flaky = run.ti("flaky")
        assert flaky.try_number == 2, run.not_successful()
        first, second = checks.logs_of(stack, run, "flaky")
        assert "XD-FLAKY planned failure on try 1" in first
        assert "XD-DIGEST" in second
    # What the failed try pushed before failing did not survive its retry.
    keys = {(r.run_id, r.task_id, r.key) for r in xcom_rows(stack, ["xd_workload"])}
    assert not any(k == "partial" for _, _, k in keys)

    # Producers logged the same digests they pushed, and consumers verified them.
    check_log = "\n".join(checks.logs_of(stack, runs[1], "check"))
    assert check_log.count("XD-VERIFIED") == 5 and "XD-WRONG-VALUE" not in check_log
    frame_log = "\n".join(checks.logs_of(stack, runs[1], "make_frame"))
    logged = checks.producer_digests(frame_log)["return_value"]

    rows = checks.verify_values(stack, ["xd_workload", "xd_cross"])
    counts = checks.assert_values_verified(rows, at_least=3 * 5 + FAN + 2 * 3)
    frame_row = next(r for r in rows if r["run_id"] == side[0] and r["task_id"] == "make_frame")
    assert frame_row["digest"] == logged and frame_row["reference"]
    state = checks.assert_no_dangling(stack)
    FIGURES["workload"] = {"runs": 4, "values": counts, "store": state.summary()}


# ------------------------------------------------------------------------------ faults


def test_s3_stopped_during_pushes_then_restarted(local_deployment: Deployment) -> None:
    """Producers are released while the S3 server is down: each try fails with xcomstash's
    store error; once the server is back the retries succeed and the consumer verifies every
    value; no row points at a missing or partial object."""
    stack = local_deployment
    api = stack.api
    gate, width = "s3down", 3
    run_id = api.trigger("xd_gated", conf={"gate": gate, "width": width, "nbytes": 3_000_000, "seed": 7})
    checks.wait_for(lambda: len(list(stack.shared.glob(f"ready-{gate}-*"))) >= width, 240,
                    "producers waiting at the gate")
    stack.stop_s3()
    down_at = time.monotonic()
    (stack.shared / f"gate-{gate}").touch()

    def all_failed_once() -> bool:
        tries = stack.tries_in_db("xd_gated", run_id, "produce")
        return all(
            (t := tries.get(i)) is not None and (t[1] >= 2 or t[0] in ("up_for_retry", "failed"))
            for i in range(width)
        )

    checks.wait_for(all_failed_once, 120, "every producer's first try to fail", interval=0.3)
    stack.restart_s3()
    FIGURES["s3_down_seconds"] = round(time.monotonic() - down_at, 1)
    run = api.wait_run("xd_gated", run_id, timeout=240, processes=stack.processes.values())
    checks.assert_success(stack, run)

    for i in range(width):
        logs = checks.logs_of(stack, run, "produce", i)
        assert len(logs) >= 2, f"produce[{i}] did not need a retry"
        assert _store_error_in(logs[0]), f"produce[{i}] try 1 log has no xcomstash store error:\n{logs[0][-3000:]}"
        assert "S3 store unreachable" in logs[0] or "cannot upload" in logs[0]
        assert "XD-DIGEST" in logs[-1] and "xcomstash audit: push ok" in logs[-1] and " bytes in " in logs[-1]
    rows = checks.verify_values(stack, ["xd_gated"])
    checks.assert_values_verified(rows, at_least=width)
    state = checks.assert_no_dangling(stack)
    FIGURES["s3_stop"] = {
        "producer_tries": [run.ti("produce", i).try_number for i in range(width)],
        "store": state.summary(),
    }


def test_store_latency_below_the_timeout_only_slows_pushes(local_deployment: Deployment) -> None:
    """Every S3 response delayed by 1 s (less than the connection's read timeout): pushes
    and pulls are slower but succeed on their first try."""
    stack = local_deployment
    assert stack.proxy is not None
    assert LATENCY_S < S3_READ_TIMEOUT_S
    stack.proxy.latency = LATENCY_S
    before = stack.proxy.stats.delayed
    try:
        run = stack.api.wait_run(
            "xd_gated", stack.api.trigger("xd_gated", conf={"width": 2, "nbytes": 1_000_000, "seed": 8}),
            timeout=240, processes=stack.processes.values(),
        )
    finally:
        stack.proxy.normal()
    checks.assert_success(stack, run)
    assert stack.proxy.stats.delayed - before >= 3, "the proxy delayed no responses: the fault was not injected"
    assert all(ti.try_number == 1 for ti in run.tasks.values()), run.tasks
    FIGURES["latency"] = {"delayed_responses": stack.proxy.stats.delayed - before, "run_seconds": round(run.seconds, 1)}


def test_hung_store_times_out_as_configured_and_the_retry_succeeds(local_deployment: Deployment) -> None:
    """The store accepts connections and never answers. The push gives up after the AWS
    connection's read timeout and retries (botocore ``config_kwargs``), raising xcomstash's
    store error well before the task's execution timeout: no hang. Once the store answers
    again, Airflow's retry pushes the value."""
    stack = local_deployment
    api = stack.api
    assert stack.proxy is not None
    stack.proxy.stall = True
    try:
        run_id = api.trigger("xd_gated", conf={"width": 1, "nbytes": 1_000_000, "seed": 9})
        checks.wait_for(
            lambda: (t := stack.tries_in_db("xd_gated", run_id, "produce").get(0)) is not None
            and (t[1] >= 2 or t[0] in ("up_for_retry", "failed")),
            150, "the push against the hung store to fail", interval=0.3,
        )
    finally:
        stack.proxy.normal()
    run = api.wait_run("xd_gated", run_id, timeout=180, processes=stack.processes.values())
    checks.assert_success(stack, run)
    first = checks.logs_of(stack, run, "produce", 0)[0]
    assert _store_error_in(first), first[-3000:]
    assert "timeout" in first.lower(), "the store error does not name the timeout:\n" + first[-3000:]
    assert "AirflowTaskTimeout" not in first, "the task hung until Airflow's execution timeout"
    seconds = _try_seconds(stack, run, "produce", 0, 1)
    # Configured worst case: per request S3_MAX_ATTEMPTS x read timeout (+ backoff), a few
    # requests per push. Recorded, not asserted (timings are noisy on a shared machine).
    FIGURES["hung_store"] = {
        "failed_try_seconds": seconds,
        "read_timeout_s": S3_READ_TIMEOUT_S,
        "connect_timeout_s": S3_CONNECT_TIMEOUT_S,
        "max_attempts": S3_MAX_ATTEMPTS,
        "stalled_connections": stack.proxy.stats.stalled,
    }


def test_dropped_connections_are_retried(local_deployment: Deployment) -> None:
    """Every third new connection to the store is reset: botocore's retries and, if those run
    out, Airflow's carry every push and pull through; every value still verifies."""
    stack = local_deployment
    assert stack.proxy is not None
    stack.proxy.drop_all()  # pooled connections would otherwise never reconnect
    stack.proxy.reset_every = 3
    resets = stack.proxy.stats.resets
    try:
        run = stack.api.wait_run(
            "xd_gated", stack.api.trigger("xd_gated", conf={"width": 4, "nbytes": 1_000_000, "seed": 10}),
            timeout=240, processes=stack.processes.values(),
        )
    finally:
        stack.proxy.normal()
    checks.assert_success(stack, run)
    assert stack.proxy.stats.resets > resets, "no connection was reset: the fault was not injected"
    rows = checks.verify_values(stack, ["xd_gated"])
    checks.assert_values_verified(rows, at_least=4)
    FIGURES["dropped_connections"] = {
        "resets": stack.proxy.stats.resets - resets,
        "task_tries_beyond_first": sum(ti.try_number - 1 for ti in run.tasks.values()),
    }


def test_task_process_killed_mid_upload_is_retried_and_never_referenced(local_deployment: Deployment) -> None:
    """SIGKILL the task process while its multipart upload is in flight: Airflow retries the
    task, the retry's object is the one referenced, and the half-written upload never becomes
    an object any row names."""
    stack = local_deployment
    api = stack.api
    assert stack.proxy is not None
    stack.proxy.latency = 0.5  # widen the window in which the upload is in flight
    try:
        run_id = api.trigger("xd_big", conf={"nbytes": BIG_NBYTES, "seed": 11})
        prefix = f"{PREFIX}/xd_big/"
        upload = checks.wait_for(
            lambda: next((u for u in unfinished_uploads(stack) if u["key"].startswith(prefix)), None),
            240, "the multipart upload to start", interval=0.1,
        )
        pid_file = stack.shared / f"pid-{run_id}-try1"
        pid = int(pid_file.read_text())
        assert pid_alive(pid), "the task process ended before it could be killed"
        os.kill(pid, signal.SIGKILL)
    finally:
        stack.proxy.normal()
    run = api.wait_run("xd_big", run_id, timeout=300, processes=stack.processes.values())
    checks.assert_success(stack, run)
    assert run.ti("upload").try_number == 2, "the killed try was not retried"

    state = checks.assert_no_dangling(stack)
    killed_key = upload["key"][len(PREFIX) + 1:]
    row = next(r for r in xcom_rows(stack, ["xd_big"])
               if r.run_id == run_id and r.task_id == "upload" and r.key == "return_value")
    referenced = uri_key(row.reference["uri"])
    still_unfinished = [u for u in state.uploads if u["upload_id"] == upload["upload_id"]]
    # The killed upload never completed, so it is not an object; if the retry streamed to the
    # same key, the object there is the retry's (and verifies below).
    assert killed_key not in state.objects or killed_key == referenced
    rows = checks.verify_values(stack, ["xd_big"])
    checks.assert_values_verified(rows, at_least=1)
    FIGURES["kill_mid_upload"] = {
        "killed_upload_key": killed_key,
        "referenced_key": referenced,
        "killed_upload_left_unfinished": bool(still_unfinished),
        "unfinished_uploads_in_store": len(state.uploads),
    }


def test_corrupted_object_fails_the_reader_with_integrity_error(local_deployment: Deployment) -> None:
    """Objects damaged in the store between push and pull (one byte flipped, 100 bytes cut):
    the readers fail with IntegrityError naming the object, visible in their task logs; the
    intact value beside them still reads; no reader ever gets a value."""
    stack = local_deployment
    api = stack.api
    source = api.wait_run("xd_corrupt_source", api.trigger("xd_corrupt_source", conf={"seed": 12}),
                          timeout=180, processes=stack.processes.values())
    checks.assert_success(stack, source)
    refs = {r.key: r.reference for r in xcom_rows(stack, ["xd_corrupt_source"])
            if r.run_id == source.run_id and r.reference}
    assert {"flip", "truncate", "intact"} <= set(refs)
    corrupt(stack, uri_key(refs["flip"]["uri"]), "flip")
    corrupt(stack, uri_key(refs["truncate"]["uri"]), "truncate")

    sink = api.wait_run("xd_corrupt_sink", api.trigger("xd_corrupt_sink", conf={"source_run_id": source.run_id}),
                        timeout=180, processes=stack.processes.values())
    assert sink.state == "failed"
    assert sink.ti("read_intact").state == "success"
    for key in ("flip", "truncate"):
        assert sink.ti(f"read_{key}").state == "failed"
        log = "\n".join(checks.logs_of(stack, sink, f"read_{key}"))
        assert "IntegrityError" in log, f"read_{key} log has no IntegrityError:\n{log[-3000:]}"
        assert uri_key(refs[key]["uri"]) in log, "the error does not name the object"
        assert "xcomstash audit: pull failed" in log, "no audit event in the task log"
        assert "XD-VERIFIED" not in log and "XD-WRONG-VALUE" not in log
    # The durable audit log has the failed pulls, with the error and who tried.
    events = _audit_events(stack, "--dag", "xd_corrupt_source", "--run", source.run_id, "--outcome", "failed")
    failed = {(e["xcom"]["key"], e["op"]) for e in events}
    assert {("flip", "pull"), ("truncate", "pull")} <= failed, events
    for e in events:
        assert "IntegrityError" in json.dumps(e) and e["actor"].get("dag_id") == "xd_corrupt_sink", e
    FIGURES["corruption"] = {"failed_readers": 2, "intact_reader": "success", "audit_failed_events": len(events)}
    # Delete both runs through the REST API: their rows go, their objects (the damaged ones
    # included) become orphans that the soak's reconcile must collect.
    api.delete_run("xd_corrupt_sink", sink.run_id)
    api.delete_run("xd_corrupt_source", source.run_id)
    assert not xcom_rows(stack, ["xd_corrupt_source", "xd_corrupt_sink"])


# ------------------------------------------------------------------------------ soak

#: Runs in waves, each wave concurrent (up to the DAG's max_active_runs), two runs of each
#: finished wave partly cleared so they run again alongside the next wave.
SOAK_RUNS = 8
SOAK_WAVE = 4
SOAK_SEED = 20261123


@pytest.mark.timeout(900)
def test_soak_runs_with_clears_and_retries_lose_nothing_and_leak_nothing(local_deployment: Deployment) -> None:
    """SOAK_RUNS runs in waves of SOAK_WAVE, a random mix of frames, arrays and small values, random tasks
    failing their first try, and random tasks of finished runs cleared (with downstream) so
    they run again with new values. Then: every run succeeded, every value of every DAG this
    module ran reads back with its producer's digest (pushed and logged), no row points at a
    missing object, and after ``xcomstash reconcile`` the store holds exactly the referenced
    value objects."""
    stack = local_deployment
    api = stack.api
    assert stack.proxy is not None
    rnd = random.Random(SOAK_SEED)
    traffic0 = stack.proxy.stats.bytes_up + stack.proxy.stats.bytes_down
    started = time.monotonic()
    run_ids: list[str] = []
    clears = 0
    for wave in range(SOAK_RUNS // SOAK_WAVE):
        ids = []
        for n in range(SOAK_WAVE):
            seed = wave * SOAK_WAVE + n + 1
            fail = [t for t in ("produce", "relay", "consume") if rnd.random() < 0.2]
            conf = {"seed": seed, "kind": rnd.choice(["frame", "array", "small"]), "fail": fail}
            ids.append(api.trigger("xd_soak", conf=conf))
        runs = api.wait_runs([("xd_soak", r) for r in ids], timeout=600, processes=stack.processes.values())
        checks.assert_success(stack, *runs)
        # Clear a random task (and what follows it) in two finished runs; they run again
        # alongside the next wave.
        for run_id in rnd.sample(ids, 2):
            api.clear("xd_soak", run_id, [rnd.choice(["produce", "relay", "consume"])], include_downstream=True)
            clears += 1
        run_ids += ids

    final = {r.run_id: r for r in api.wait_runs([("xd_soak", r) for r in run_ids], timeout=600,
                                                 processes=stack.processes.values())}
    soak_seconds = time.monotonic() - started
    checks.assert_success(stack, *final.values())
    task_runs = sum(ti.try_number for run in final.values() for ti in run.tasks.values())
    # Producers logged the digests the consumers checked.
    for run in list(final.values())[:: max(1, SOAK_RUNS // 10)]:
        logged = checks.producer_digests(checks.logs_of(stack, run, "produce")[-1])
        stored = {r.key: r.value for r in xcom_rows(stack, ["xd_soak"]) if r.run_id == run.run_id
                  and r.task_id == "produce" and r.key.startswith("digest_")}
        assert stored == {f"digest_{k}": v for k, v in logged.items()}

    # Every value of every DAG this module ran, straight from the store, by digest.
    rows = checks.verify_values(stack, ["xd_workload", "xd_cross", "xd_gated", "xd_big", "xd_soak"])
    values = checks.assert_values_verified(rows, at_least=SOAK_RUNS * 4)
    before = checks.assert_no_dangling(stack)

    reconcile = _reconcile(stack)
    after = checks.assert_no_dangling(stack)
    assert not after.orphans, f"objects no row references after reconcile: {sorted(after.orphans)[:10]}"
    assert set(after.value_objects) == after.referenced
    rows_after = checks.verify_values(stack, ["xd_workload", "xd_soak"])
    checks.assert_values_verified(rows_after, at_least=SOAK_RUNS * 4)

    FIGURES["soak"] = {
        "runs": SOAK_RUNS,
        "clears": clears,
        "task_tries": task_runs,
        "seconds": round(soak_seconds, 1),
        "bytes_through_store_proxy": stack.proxy.stats.bytes_up + stack.proxy.stats.bytes_down - traffic0,
        "values_verified_all_dags": values,
        "orphans_before_reconcile": len(before.orphans),
        "reconcile": reconcile,
        "store_after": after.summary(),
    }
    FIGURES["stack_timings"] = {k: round(v, 1) for k, v in stack.timings.items()}
    print("\nDEPLOYMENT FIGURES (LocalExecutor)\n" + json.dumps(FIGURES, indent=1, default=str))
    (stack.root / "figures.json").write_text(json.dumps(FIGURES, indent=1, default=str))


# ------------------------------------------------------------------------------ helpers


def _try_seconds(stack: Deployment, run, task_id: str, map_index: int, try_number: int) -> float | None:
    """Wall time of one finished try, from the task instance history in the REST API."""
    from tests.harness.api import q

    tries = stack.api.get(
        f"/dags/{q(run.dag_id)}/dagRuns/{q(run.run_id)}/taskInstances/{q(task_id)}/{map_index}/tries"
    )["task_instances"]
    for t in tries:
        if t["try_number"] == try_number and t.get("start_date") and t.get("end_date"):
            from datetime import datetime

            start = datetime.fromisoformat(t["start_date"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(t["end_date"].replace("Z", "+00:00"))
            return round((end - start).total_seconds(), 1)
    return None


def _reconcile(stack: Deployment) -> dict[str, object]:
    """``xcomstash reconcile --grace 0s`` against this deployment (straight to S3)."""
    assert stack.s3 is not None
    env = {f"AIRFLOW_CONN_{CONN_ID.upper()}": stack.connection_json(stack.s3.endpoint_url)}
    cli = "import sys; from xcomstash.cli import main; sys.exit(main())"
    proc = stack.python(cli, "reconcile", "--grace", "0s", "--json", "--quiet", env=env, timeout=300)
    assert proc.returncode == 0, f"reconcile failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    return {k: report.get(k) for k in ("listed", "live", "orphans", "deleted", "missing_count", "errors", "summary")
            if k in report}


def _audit_events(stack: Deployment, *args: str) -> list[dict[str, object]]:
    """``xcomstash audit --json ARGS`` against this deployment's store: the durable audit log."""
    assert stack.s3 is not None
    env = {f"AIRFLOW_CONN_{CONN_ID.upper()}": stack.connection_json(stack.s3.endpoint_url)}
    cli = "import sys; from xcomstash.cli import main; sys.exit(main())"
    proc = stack.python(cli, "audit", "--json", *args, env=env, timeout=120)
    assert proc.returncode == 0, f"xcomstash audit failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
