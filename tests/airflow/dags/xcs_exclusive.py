"""Small values only: with ``[xcomstash] exclusive = True`` every one of them is stored."""

from __future__ import annotations

import pandas as pd
import xcs_values as V
from airflow.sdk import dag, get_current_context, task


@dag(dag_id="xcs_exclusive", schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_exclusive():
    @task
    def produce_number():
        get_current_context()["ti"].xcom_push(key="text", value="short")
        return 7

    @task
    def produce_scalar():
        return V.scalar()

    @task(multiple_outputs=False)
    def produce_dict():
        return V.small_dict()

    @task
    def produce_frame():
        return V.small_frame()

    @task
    def produce_mapped(i: int):
        return {"i": i}

    @task
    def consume(number, scalar, small, frame, mapped) -> list:
        ti = get_current_context()["ti"]
        assert number == 7 and type(number) is int
        assert ti.xcom_pull(task_ids="produce_number", key="text") == "short"
        assert type(scalar) is type(V.scalar()) and scalar.tobytes() == V.scalar().tobytes()
        assert small == V.small_dict()
        pd.testing.assert_frame_equal(frame, V.small_frame(), check_exact=True)
        assert list(mapped) == [{"i": i} for i in range(5)]
        return ["number", "text", "scalar", "small_dict", "small_frame", "mapped"]

    consume(
        produce_number(),
        produce_scalar(),
        produce_dict(),
        produce_frame(),
        produce_mapped.expand(i=list(range(5))),
    )


xcs_exclusive()
