"""A consumer DAG that pulls another DAG's values from another run.

``xcs_sink`` is told which run of ``xcs_source`` to read via its run conf
(``{"source_run_id": ...}``) and pulls with ``xcom_pull(dag_id=..., task_ids=..., run_id=...)``.
(``include_prior_dates`` cannot stand in for the run id across DAGs: Airflow resolves the cut-off
date from a run with the *caller's* run id in the *source* DAG, which does not exist.)
"""

from __future__ import annotations

import pandas as pd
import xcs_values as V
from airflow.sdk import dag, get_current_context, task

SOURCE = "xcs_source"


@dag(dag_id=SOURCE, schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_source():
    @task
    def frame() -> pd.DataFrame:
        df = V.big_frame(seed=11)
        get_current_context()["ti"].xcom_push(key="digest", value=V.frame_digest(df))
        return df

    @task(multiple_outputs=False)
    def settings():
        return V.small_dict()

    @task
    def part(i: int):
        return V.mapped_value(i)

    frame()
    settings()
    part.expand(i=list(range(V.MAPPED_COUNT)))


@dag(dag_id="xcs_sink", schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_sink():
    @task
    def read_other_dag() -> list:
        context = get_current_context()
        ti, source_run = context["ti"], context["dag_run"].conf["source_run_id"]
        assert source_run != ti.run_id
        checked = []

        df = ti.xcom_pull(dag_id=SOURCE, task_ids="frame", run_id=source_run)
        assert V.frame_digest(df) == ti.xcom_pull(dag_id=SOURCE, task_ids="frame", key="digest", run_id=source_run)
        pd.testing.assert_frame_equal(df, V.big_frame(seed=11), check_exact=True)
        checked.append("frame")

        assert ti.xcom_pull(dag_id=SOURCE, task_ids="settings", run_id=source_run) == V.small_dict()
        checked.append("settings")

        parts = ti.xcom_pull(dag_id=SOURCE, task_ids="part", run_id=source_run)
        assert len(parts) == V.MAPPED_COUNT
        for i, value in enumerate(parts):
            V.assert_mapped_value(i, value)
        checked.append("all_parts")

        V.assert_mapped_value(4, ti.xcom_pull(dag_id=SOURCE, task_ids="part", run_id=source_run, map_indexes=4))
        checked.append("part_4")

        # Without the run id the pull looks in the sink's own run, where there is nothing.
        assert ti.xcom_pull(dag_id=SOURCE, task_ids="frame") is None
        checked.append("own_run_is_empty")
        return checked

    read_other_dag()


xcs_source()
xcs_sink()
