"""Dedup in real Airflow: a mapped task whose every instance returns the same table, one of
which fails once after pushing (so Airflow purges that XCom before the retry)."""

from __future__ import annotations

from datetime import timedelta

import xcs_values as V
from airflow.sdk import dag, get_current_context, task

WIDTH = 6


@dag(dag_id="xcs_dedup", schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_dedup():
    @task(retries=1, retry_delay=timedelta(seconds=0))
    def same_table(i: int):
        ti = get_current_context()["ti"]
        ti.xcom_push(key="also_shared", value=V.big_frame())
        if i == 0 and ti.try_number == 1:
            raise RuntimeError("XCS-DELIBERATE failure of map index 0's first try, after pushing")
        return V.big_frame()

    @task
    def check(tables) -> dict:
        ti = get_current_context()["ti"]
        expected = V.frame_digest(V.big_frame())
        digests = [V.frame_digest(t) for t in tables]
        assert digests == [expected] * WIDTH, digests
        also = ti.xcom_pull(task_ids="same_table", key="also_shared", map_indexes=list(range(WIDTH)))
        assert [V.frame_digest(t) for t in also] == [expected] * WIDTH
        return {"tables": len(digests)}

    check(same_table.expand(i=list(range(WIDTH))))


xcs_dedup()
