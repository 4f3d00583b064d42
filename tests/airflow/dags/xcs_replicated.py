"""Values stored in a replicated store (several locations in ``store_url``), and a consumer
that checks them.

``xcs_replicated``: three producers return a DataFrame, a NumPy array and a large dict, each
also pushing the digest of what it returned as a small XCom (``digest``); ``check`` pulls the
three values, recomputes their digests and compares them with the pushed ones and with the
expected values (xcs_values), failing with XCS-WRONG-VALUE on any difference. It returns the
digests it computed, so the test sees what the consumer really received.

``xcs_replicated_push_q1`` and ``xcs_replicated_push_qall``: one producer of one array (its
seed from the run conf), no consumer: the write-quorum cases, two DAGs so that the test can
run them side by side and tell their runs apart. With ``conf["gate"]`` (a file path) the
producer first waits until that file exists, so the test can start the run early and let it
push at the moment it chooses (after stopping a location).
"""

from __future__ import annotations

import os
import time

import xcs_values as V
from airflow.sdk import dag, get_current_context, task

#: What each producer returns, and how its digest is computed.
VALUES = {
    "make_frame": (V.big_frame, V.frame_digest),
    "make_array": (V.big_array, V.array_digest),
    "make_dict": (V.big_dict, V.json_digest),
}


def _producer(task_id: str):
    make, digest = VALUES[task_id]

    @task(task_id=task_id)
    def produce():
        value = make()
        get_current_context()["ti"].xcom_push(key="digest", value=digest(value))
        return value

    return produce()


@dag(dag_id="xcs_replicated", schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_replicated():
    @task
    def check() -> dict[str, str]:
        ti = get_current_context()["ti"]
        received = {}
        for task_id, (make, digest) in VALUES.items():
            value = ti.xcom_pull(task_ids=task_id)
            got = digest(value) if value is not None else None
            pushed = ti.xcom_pull(task_ids=task_id, key="digest")
            if got != pushed or got != digest(make()):
                print(f"XCS-WRONG-VALUE {task_id}: {got} (pushed {pushed})")
                raise AssertionError(f"XCS-WRONG-VALUE for {task_id}")
            received[task_id] = got
        return received

    [_producer(t) for t in VALUES] >> check()


def _push_dag(dag_id: str):
    @dag(dag_id=dag_id, schedule=None, catchup=False, tags=["xcomstash-test"])
    def push():
        @task
        def produce():
            context = get_current_context()
            gate = context["dag_run"].conf.get("gate")
            deadline = time.monotonic() + 300
            while gate and not os.path.exists(gate):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the gate {gate} was never opened")
                time.sleep(0.1)
            value = V.big_array(seed=V.SEED + int(context["dag_run"].conf.get("seed", 1)))
            context["ti"].xcom_push(key="digest", value=V.array_digest(value))
            return value

        produce()

    return push()


xcs_replicated()
_push_dag("xcs_replicated_push_q1")
_push_dag("xcs_replicated_push_qall")
