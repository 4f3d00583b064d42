"""The metrics DAG: ``produce`` pushes a small value (inline), a value only ``consume`` may
read (offloaded) and returns a DataFrame (offloaded); ``consume`` pulls all three and checks
them; ``snoop`` tries to read the restricted value and must be refused."""

from __future__ import annotations

import numpy as np
import xcs_values as V
from airflow.sdk import dag, get_current_context, task

from xcomstash import Restricted
from xcomstash.errors import AccessDeniedError

DAG_ID = "xcs_metrics"
SMALL = {"rows": V.BIG_ROWS, "note": "inline"}


def secret() -> np.ndarray:
    return np.arange(20_000, dtype=np.float64)


@dag(dag_id=DAG_ID, schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_metrics():
    @task
    def produce():
        ti = get_current_context()["ti"]
        ti.xcom_push(key="small", value=SMALL)
        ti.xcom_push(key="restricted", value=Restricted(secret(), tasks=["consume"]))
        return V.big_frame()

    @task
    def consume(frame) -> str:
        ti = get_current_context()["ti"]
        if V.frame_digest(frame) != V.frame_digest(V.big_frame()):
            raise AssertionError("XCS-WRONG-VALUE frame")
        if ti.xcom_pull(task_ids="produce", key="small") != SMALL:
            raise AssertionError("XCS-WRONG-VALUE small")
        if V.array_digest(ti.xcom_pull(task_ids="produce", key="restricted")) != V.array_digest(secret()):
            raise AssertionError("XCS-WRONG-VALUE restricted")
        return "ok"

    @task
    def snoop() -> str:
        try:
            value = get_current_context()["ti"].xcom_pull(task_ids="produce", key="restricted")
        except AccessDeniedError:
            return "denied"
        raise AssertionError(f"XCS-WRONG-VALUE snoop received {type(value).__name__}")

    made = produce()
    consume(made)
    made >> snoop()


xcs_metrics()
