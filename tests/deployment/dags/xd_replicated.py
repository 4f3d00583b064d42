"""A DAG for the replicated-store deployment (tests/deployment/test_replicated_deployment.py):
values pushed before and after one store location stops, pulled while it is down.

``produce`` is mapped over ``width`` indexes; those listed in ``conf["early"]`` push at once,
the others wait at ``conf["gate"]`` (so the test can stop a location between the two groups).
``consume`` runs after all of them, so it pulls every value while that location is down, and
checks each against the digest its producer recorded.
"""

from __future__ import annotations

from datetime import timedelta

import xd_common as C
from airflow.sdk import dag, get_current_context, task


def _conf() -> dict:
    return dict(get_current_context()["dag_run"].conf or {})


@dag(dag_id="xd_replicated", schedule=None, catchup=False,
     default_args={"retries": 1, "retry_delay": timedelta(seconds=2)}, tags=["xcomstash-deploy"])
def xd_replicated():
    @task
    def widths():
        return list(range(int(_conf().get("width", 3))))

    @task
    def produce(i: int):
        ti = get_current_context()["ti"]
        c = _conf()
        if i not in c.get("early", []) and c.get("gate"):
            C.wait_for_gate(c["gate"])
        value = C.noise(int(c.get("seed", 1)), int(c.get("nbytes", 1_000_000)), "replicated", i)
        C.record(ti, "return_value", value)
        return value

    @task(retries=0)
    def consume(values):
        ti = get_current_context()["ti"]
        values = list(values)
        digests = C.as_list(ti.xcom_pull(task_ids="produce", key="digest_return_value"))
        for i, (value, expected) in enumerate(zip(values, digests, strict=True)):
            C.verify(f"produce[{i}]", value, expected)
        return len(values)

    consume(produce.expand(i=widths()))


xd_replicated()
