"""DAGs for the lifecycle tests: offloaded values (bytes are always offloaded), a value two
tasks share (one blob with dedup), mapped outputs, a second key, and an inline value."""

from __future__ import annotations

import os
import signal

from airflow.sdk import dag, get_current_context, task


def _payload(tag: str, size: int = 70_000) -> bytes:
    return (tag.encode() * (size // max(1, len(tag)) + 1))[:size]


@dag(dag_id="xcs_gc", schedule=None, catchup=False)
def xcs_gc():
    @task
    def big() -> bytes:
        return _payload("big-" + get_current_context()["run_id"])

    @task
    def twin_a() -> bytes:
        return _payload("twin-" + get_current_context()["run_id"])

    @task
    def twin_b() -> bytes:
        return _payload("twin-" + get_current_context()["run_id"])

    @task
    def part(i: int) -> bytes:
        return _payload(f"part{i}-" + get_current_context()["run_id"])

    @task
    def keys() -> bytes:
        context = get_current_context()
        context["ti"].xcom_push(key="extra", value=_payload("extra-" + context["run_id"]))
        return _payload("keys-" + context["run_id"])

    @task
    def small() -> int:
        return 7

    big()
    twin_a()
    twin_b()
    part.expand(i=[1, 2, 3])
    keys()
    small()


@dag(dag_id="xcs_gc_other", schedule=None, catchup=False)
def xcs_gc_other():
    @task
    def only() -> bytes:
        return _payload("other-" + get_current_context()["run_id"])

    only()


@dag(dag_id="xcs_gc_killed", schedule=None, catchup=False)
def xcs_gc_killed():
    @task
    def killed_writer() -> None:
        """Write an object through the real backend, then die before the row is recorded."""
        from xcomstash.airflow.backend import XComStashBackend

        context = get_current_context()
        XComStashBackend.serialize_value(
            _payload("killed"), key="return_value", task_id="killed_writer",
            dag_id="xcs_gc_killed", run_id=context["run_id"], map_index=-1,
        )
        os.kill(os.getpid(), signal.SIGKILL)

    killed_writer()


xcs_gc()
xcs_gc_other()
xcs_gc_killed()
