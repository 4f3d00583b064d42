"""Stored objects that go bad between the producer's run and the consumer's run.

The source DAG run stores five arrays. The test then deletes one object, truncates one and
flips one byte of another, and runs the sink DAG, whose ``read_<key>`` tasks pull those
values from the source run (``xcom_pull(dag_id=..., run_id=...)``). A second sink run reads a
value whose store cannot be reached (an S3 store URL on a closed local port). Every damaged
read must fail its task with the xcomstash error naming the object's URI; no task may ever
receive a value (the sink tasks log XCS-WRONG-VALUE if they do).
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import pytest

from tests.airflow.dagfiles import dag_values_module
from tests.harness.airflow import AirflowEnv, DagRunResult, raised_exceptions

pytestmark = pytest.mark.airflow

SOURCE, SINK = "xcs_fault_source", "xcs_fault_sink"
S3_CONN_ID = "xcs_closed"
S3_ROOT = "s3://xcom/faults"


def damage(env: AirflowEnv, refs: dict[str, dict[str, Any]]) -> None:
    env.object_path(refs["deleted"]).unlink()

    truncated = env.object_path(refs["truncated"])
    os.truncate(truncated, truncated.stat().st_size // 2)

    flipped = env.object_path(refs["flipped"])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte in the middle of the body
    flipped.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def faults(make_airflow_env) -> tuple[AirflowEnv, DagRunResult, DagRunResult, dict[str, dict[str, Any]]]:
    env = make_airflow_env("faults", dags=["xcs_faults.py"])
    with env.one_process():  # the objects damaged between the runs are read afresh
        source = env.dags_test(SOURCE, logical_date="2026-01-01T00:00:00+00:00")
        source.assert_success()
        refs = {r.key: r.value for r in env.xcom_rows(SOURCE, source.run_id, "produce")}
        assert all(r.get("__xcomstash__") == 1 for r in refs.values()), refs

        damage(env, refs)
        local = env.dags_test(
            SINK,
            logical_date="2026-01-02T00:00:00+00:00",
            conf={"source_run_id": source.run_id, "keys": ["intact", "deleted", "truncated", "flipped"]},
        )

    # The unreachable store: the row now points into an S3 store whose endpoint is a local
    # port nothing listens on, and the sink's store is that S3 store.
    # Re-signed with the env's keyset (created on first use): what a worker writing to that
    # S3 store would have written.
    from xcomstash.security.crypto.keyset import read_keyset_file
    from xcomstash.security.signing import signed

    s3_ref = dict(refs["unreachable"], uri=refs["unreachable"]["uri"].replace(f"file://{env.store}", S3_ROOT))
    s3_ref = signed(read_keyset_file(env.home / "xcomstash-keyset.json"), s3_ref)
    env.set_xcom_value(SOURCE, source.run_id, "produce", "unreachable", s3_ref)
    refs["unreachable"] = s3_ref
    # A port bound but not listening: connections are refused, and nothing else can take it.
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", 0))
    closed = {
        "conn_type": "aws",
        "login": "test",
        "password": "test-secret",
        "extra": {
            "endpoint_url": f"http://127.0.0.1:{blocker.getsockname()[1]}",
            "region_name": "us-east-1",
            "config_kwargs": {"retries": {"max_attempts": 2, "mode": "standard"}, "connect_timeout": 2},
        },
    }
    with blocker:
        unreachable = env.dags_test(
            SINK,
            logical_date="2026-01-03T00:00:00+00:00",
            conf={"source_run_id": source.run_id, "keys": ["unreachable"]},
            env={
                "AIRFLOW__XCOMSTASH__STORE_URL": f"s3://{S3_CONN_ID}@{S3_ROOT[len('s3://'):]}",
                # A shared store needs keys (or an explicit opt-out): sign with the env's keyset.
                "AIRFLOW__XCOMSTASH__KEYSETS": f"file:{env.home / 'xcomstash-keyset.json'}",
                f"AIRFLOW_CONN_{S3_CONN_ID.upper()}": json.dumps(closed),
            },
        )
    return env, local, unreachable, refs


def assert_failed_with(
    env: AirflowEnv, run: DagRunResult, key: str, errors: tuple[str, ...], uri: str
) -> str:
    """The read task failed, finally with one of ``errors`` naming ``uri``, and got nothing."""
    task_id = f"read_{key}"
    log = run.task_log(task_id)
    assert run.task_state(task_id) == "failed", f"{task_id}: {run.task_state(task_id)}\n{log[-3000:]}"
    assert "XCS-WRONG-VALUE" not in log, log[-3000:]
    raised = raised_exceptions(log)
    assert raised, f"{task_id} logged no exception:\n{log[-3000:]}"
    name, message = raised[-1]
    assert name in {f"xcomstash.errors.{e}" for e in errors}, f"{task_id} failed with {name}: {message}"
    assert uri in message, f"{uri} not in the error of {task_id}: {message}"
    assert env.xcom_rows(SINK, run.run_id, task_id) == []  # the failed read pushed nothing
    return name.rsplit(".", 1)[1]


def test_intact_value_is_still_read_in_the_same_run(faults) -> None:
    env, local, _, _ = faults
    V = dag_values_module()
    assert local.task_state("read_intact") == "success", local.task_log("read_intact")[-3000:]
    assert env.xcom_value(SINK, local.run_id, "read_intact") == V.array_digest(V.fault_payload("intact"))
    assert local.state == "failed"  # because of the damaged reads
    assert local.task_state("read_unreachable") == "skipped"


def test_deleted_object_fails_the_task_with_object_missing(faults) -> None:
    env, local, _, refs = faults
    assert_failed_with(env, local, "deleted", ("ObjectMissingError",), refs["deleted"]["uri"])


def test_truncated_object_fails_the_task_with_integrity_error(faults) -> None:
    env, local, _, refs = faults
    assert_failed_with(env, local, "truncated", ("IntegrityError",), refs["truncated"]["uri"])
    assert "truncated or replaced" in local.task_log("read_truncated")


def test_flipped_byte_fails_the_task_with_integrity_error(faults) -> None:
    env, local, _, refs = faults
    assert_failed_with(env, local, "flipped", ("IntegrityError",), refs["flipped"]["uri"])


def test_unreachable_store_fails_the_task_with_store_error(faults) -> None:
    env, _, unreachable, refs = faults
    assert unreachable.state == "failed"
    uri = refs["unreachable"]["uri"]
    assert uri.startswith("s3://")
    assert_failed_with(env, unreachable, "unreachable", ("StoreReadError", "StoreUnavailableError"), uri)
    assert "S3 store unreachable" in unreachable.task_log("read_unreachable")


def test_damaged_objects_are_left_for_inspection(faults) -> None:
    """A failed read neither repairs nor deletes anything: the evidence stays in the store."""
    env, _, _, refs = faults
    assert not env.object_path(refs["deleted"]).exists()
    for key in ("intact", "truncated", "flipped"):
        assert env.object_path(refs[key]).exists(), key
    assert env.trace("purge") == []
