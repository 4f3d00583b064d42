"""A task that fails once after pushing (and is retried), and is later cleared and re-run.

``XCS_PHASE`` (an environment variable set by the test) tells the first run (1) from the
re-run after ``airflow tasks clear`` (2). Every value depends on phase and try number, so a
stale object can never pass for the current one.
"""

from __future__ import annotations

import os
from datetime import timedelta

import xcs_values as V
from airflow.sdk import dag, get_current_context, task


@dag(dag_id="xcs_rerun", schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_rerun():
    @task(retries=1, retry_delay=timedelta(seconds=0))
    def flaky():
        ti = get_current_context()["ti"]
        phase = os.environ["XCS_PHASE"]
        made = {"phase": phase, "try": ti.try_number}
        ti.xcom_push(key="made", value=made)
        ti.xcom_push(key="payload", value=V.attempt_array(phase, ti.try_number))
        if phase == "1" and ti.try_number == 1:
            ti.xcom_push(key="first_try_only", value=V.attempt_array("9", 1))
            raise RuntimeError("XCS-DELIBERATE failure of the first try, after pushing")
        if phase == "1":
            ti.xcom_push(key="first_run_only", value=V.attempt_array("9", 2))
        return V.attempt_array(phase, ti.try_number)

    @task
    def check(value) -> dict:
        ti = get_current_context()["ti"]
        made = ti.xcom_pull(task_ids="flaky", key="made")
        expected = V.array_digest(V.attempt_array(made["phase"], made["try"]))
        assert V.array_digest(value) == expected, "return value is not the latest try's"
        assert V.array_digest(ti.xcom_pull(task_ids="flaky", key="payload")) == expected, "stale payload"
        assert ti.xcom_pull(task_ids="flaky", key="first_try_only") is None
        return {**made, "first_run_only": ti.xcom_pull(task_ids="flaky", key="first_run_only") is not None}

    check(flaky())


xcs_rerun()
