"""A deployment (scheduler + LocalExecutor on PostgreSQL) whose store_url names two
locations: the deployment's S3 (behind the fault proxy) and a second SeaweedFS, at
``write_quorum = 1``. The first location is stopped in the middle of a run: values pushed
before the stop are pulled from the second location, values pushed while it is down go to
the second location only, and the run succeeds with every value verified by its consumer.
Once the first location is back, ``xcomstash repair`` copies what it missed.

A deployment of its own (started for this module), so the other deployment tests keep their
single-location store.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest

from tests.deployment import checks
from tests.deployment.stack import BUCKET, PREFIX, Deployment
from tests.harness.servers import S3Server, start_seaweedfs

pytestmark = [pytest.mark.deployment, pytest.mark.airflow, pytest.mark.s3]

#: The second location's Airflow connection and bucket (a bucket name of its own, so that the
#: two locations' root URIs, which references record, tell them apart).
REPLICA_CONN_ID = "xcs_replica"
REPLICA_BUCKET = "replica"
DAG_ID = "xd_replicated"
CLI = "import sys; from xcomstash.cli import main; sys.exit(main())"


class ReplicatedDeployment(Deployment):
    """The deployment with a second S3 location in ``store_url`` (a SeaweedFS of its own,
    reached directly) and ``[xcomstash] write_quorum = 1``."""

    def __init__(self, root: Path, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.replica: S3Server | None = None
        self.trace_file = self.root / "trace.jsonl"

    def trace(self) -> list[dict[str, Any]]:
        if not self.trace_file.exists():
            return []
        return [json.loads(line) for line in self.trace_file.read_text().splitlines() if line.strip()]

    @property
    def store_url(self) -> str:
        return f"{super().store_url} s3://{REPLICA_CONN_ID}@{REPLICA_BUCKET}/{PREFIX}"

    def environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        assert self.replica is not None
        env = super().environ()
        env["AIRFLOW__XCOMSTASH__WRITE_QUORUM"] = "1"
        # Every task runs on this machine: one trace file says where each pull read from.
        env["AIRFLOW__XCOMSTASH__TRACE_FILE"] = str(self.trace_file)
        env[f"AIRFLOW_CONN_{REPLICA_CONN_ID.upper()}"] = self.connection_json(self.replica.endpoint_url)
        env.update(extra or {})
        return env

    def _start(self) -> None:
        self.replica = start_seaweedfs(self.root / "s3-replica", bucket=REPLICA_BUCKET)
        super()._start()

    def stop(self) -> None:
        """The replica stops alongside the rest (SeaweedFS may need its SIGKILL grace period)."""
        stopper = threading.Thread(target=self.replica.stop) if self.replica is not None else None
        if stopper is not None:
            stopper.start()
        super().stop()
        if stopper is not None:
            stopper.join()

    def describe(self, lines: int = 40) -> str:
        text = super().describe(lines)
        if self.replica is not None:
            text += f"\n--- seaweedfs (replica) ---\n{self.replica.log_tail(lines // 2)}"
        return text


@pytest.fixture(scope="module")
def replicated_deployment(tmp_path_factory: pytest.TempPathFactory, airflow_postgres_template) -> Iterator[Deployment]:
    stack = ReplicatedDeployment(
        tmp_path_factory.mktemp("replicated"), executor="local", parallelism=6, dags=["xd_replicated.py"],
        database=airflow_postgres_template,
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def objects(server: S3Server) -> dict[str, bytes]:
    client, bucket = server.client(), server.bucket
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PREFIX}/")
        for o in page.get("Contents", [])
    ]
    return {k[len(PREFIX) + 1:]: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def references(stack: Deployment) -> dict[str, dict[str, Any]]:
    """The xcomstash references of the DAG's rows, by ``task_id[map_index]``."""
    from tests.deployment.storeview import xcom_rows

    return {
        f"{r.task_id}[{r.map_index}]": r.reference for r in xcom_rows(stack, [DAG_ID])
        if r.key == "return_value" and r.reference
    }


def repair(stack: Deployment) -> dict[str, Any]:
    proc = stack.python(CLI, "repair", "--json", "--quiet", timeout=300)
    assert proc.returncode in (0, 2), f"repair failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return {**json.loads(proc.stdout), "exit": proc.returncode}


@pytest.mark.timeout(600)  # includes starting the deployment
def test_first_location_stopped_mid_run_at_quorum_one_then_repaired(replicated_deployment: Deployment) -> None:
    stack = replicated_deployment
    assert isinstance(stack, ReplicatedDeployment) and stack.s3 is not None and stack.replica is not None
    api = stack.api
    gate, width, early = "replica-down", 3, [0]
    run_id = api.trigger(DAG_ID, conf={"gate": gate, "width": width, "early": early, "seed": 11})

    def early_pushed_late_waiting() -> bool:
        tries = stack.tries_in_db(DAG_ID, run_id, "produce")  # the database: no load on the API server
        return all(
            (t := tries.get(i)) is not None and t[0] == "success" for i in early
        ) and len(list(stack.shared.glob(f"ready-{gate}-*"))) >= width - len(early)

    checks.wait_for(early_pushed_late_waiting, 240, "early producers done, late ones at the gate", interval=0.3)
    before_stop = references(stack)
    stack.stop_s3()  # the first location, while the late producers are about to push
    try:
        (stack.shared / f"gate-{gate}").touch()
        run = api.wait_run(DAG_ID, run_id, timeout=240, processes=stack.processes.values())
    finally:
        stack.restart_s3()
    checks.assert_success(stack, run)

    # Every producer succeeded on its first try; the consumer verified every value.
    assert all(run.ti("produce", i).try_number == 1 for i in range(width)), run.tasks
    consume_log = "\n".join(checks.logs_of(stack, run, "consume"))
    assert consume_log.count("XD-VERIFIED") == width and "XD-WRONG-VALUE" not in consume_log

    # Where the consumer read each value from, with the first location down: the early values
    # (held by both) after the first location failed, the late ones (held by the second only,
    # which their references name) straight from the second.
    pulls = {
        e["xcom"]["map_index"]: e["extra"] for e in stack.trace()
        if e["op"] == "pull" and e["xcom"]["run_id"] == run_id and e["xcom"]["task_id"] == "produce"
        and e["xcom"]["key"] == "return_value"
    }
    assert set(pulls) == set(range(width)), pulls
    for i in range(width):
        assert pulls[i]["source"] == "replica:1", (i, pulls[i])
        if i in early:
            (failed,) = pulls[i]["failover"]  # unreachable: StoreReadError or StoreUnavailableError
            assert failed.startswith("replica:0: Store"), pulls[i]
        else:
            assert "failover" not in pulls[i], pulls[i]

    roots = [f"s3://{BUCKET}/{PREFIX}", f"s3://{REPLICA_BUCKET}/{PREFIX}"]
    refs = references(stack)
    assert set(refs) == {f"produce[{i}]" for i in range(width)}, refs
    for i in range(width):
        # Pushed with both up: both locations; pushed while the first was down: only the second.
        assert refs[f"produce[{i}]"]["locations"] == (roots if i in early else roots[1:]), refs[f"produce[{i}]"]
    assert before_stop == {f"produce[{i}]": refs[f"produce[{i}]"] for i in early}

    # The first location is back: repair copies the late values there.
    report = repair(stack)
    assert report["exit"] == 0, report
    assert (report["repaired"], report["copies"]) == (width - len(early), width - len(early)), report
    assert report["healthy"] == len(early), report
    first, second = objects(stack.s3), objects(stack.replica)
    for ref in refs.values():
        key = ref["uri"][len(roots[0]) + 1:]
        assert key in first and key in second, key
        assert first[key] == second[key], f"{key}: the copies differ"
