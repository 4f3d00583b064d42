"""What the XCom tab and the storage overview show: one task instance with a DataFrame, an
array, JSON (with a secret-looking field) and bytes, a value restricted to one reader, a
mapped task, and a task denied a pull (an audit event worth a look)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from airflow.sdk import dag, get_current_context, task

ROWS = 200_000


def frame() -> pd.DataFrame:
    ids = np.arange(ROWS)
    return pd.DataFrame({
        "id": ids,
        "city": np.array(["Lisbon", "Osaka", "Quito", "Tromsø"])[ids % 4],
        "amount": np.where(ids % 7 == 3, np.nan, ids * 0.5),
        "when": pd.date_range("2026-01-01", periods=ROWS, freq="s", tz="UTC"),
    })


def array() -> np.ndarray:
    a = np.arange(200_000, dtype=np.float64).reshape(400, 500)
    a[0, :3] = np.nan
    return a


def settings() -> dict:
    return {"owner": "data-team", "password": "hunter2-do-not-show", "items": list(range(20_000))}


def blob() -> bytes:
    return b"XCSBLOB\x00" + bytes(range(256)) * 400


@dag(dag_id="xcs_ui", schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_ui():
    @task
    def produce() -> pd.DataFrame:
        ti = get_current_context()["ti"]
        ti.xcom_push(key="array", value=array())
        ti.xcom_push(key="settings", value=settings())
        ti.xcom_push(key="blob", value=blob())
        return frame()

    @task
    def secret():
        from xcomstash import Restricted

        return Restricted(frame().head(50_000), tasks=["nobody"])

    @task
    def snoop() -> str:
        from xcomstash.errors import AccessDeniedError

        try:
            get_current_context()["ti"].xcom_pull(task_ids="secret")
        except AccessDeniedError:
            return "denied"
        raise AssertionError("the restricted value was handed to a task that is not a reader")

    @task
    def fan(x: int):
        return {"x": x}

    produce()
    secret() >> snoop()
    fan.expand(x=[1, 2])


xcs_ui()
