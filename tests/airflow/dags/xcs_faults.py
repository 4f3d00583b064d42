"""A source run whose stored objects the test damages, and a sink that reads them.

Each ``read_<key>`` task pulls one value of the source run (cross-DAG, by run id from the run
conf) and runs only if its key is listed in ``conf["keys"]``, so one sink run exercises
several faults. A read that returns anything at all for a damaged object fails loudly with
XCS-WRONG-VALUE: the only acceptable outcome is an xcomstash error raised by the pull.
"""

from __future__ import annotations

import xcs_values as V
from airflow.sdk import dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

SOURCE = "xcs_fault_source"
KEYS = V.FAULT_KEYS
payload = V.fault_payload


@dag(dag_id=SOURCE, schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_fault_source():
    @task
    def produce() -> None:
        ti = get_current_context()["ti"]
        for key in KEYS:
            ti.xcom_push(key=key, value=payload(key))

    produce()


def _make_reader(key: str):
    @task(task_id=f"read_{key}")
    def read() -> str:
        context = get_current_context()
        conf = context["dag_run"].conf
        if key not in conf["keys"]:
            raise AirflowSkipException(f"{key} is not part of this run")
        value = context["ti"].xcom_pull(dag_id=SOURCE, task_ids="produce", key=key, run_id=conf["source_run_id"])
        if value is None or V.array_digest(value) != V.array_digest(payload(key)):
            print(f"XCS-WRONG-VALUE {key}: received {type(value).__name__} {str(value)[:80]}")
            raise AssertionError(f"XCS-WRONG-VALUE for {key}")
        return V.array_digest(value)

    return read()


@dag(dag_id="xcs_fault_sink", schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_fault_sink():
    for key in KEYS:
        _make_reader(key)


xcs_fault_source()
xcs_fault_sink()
