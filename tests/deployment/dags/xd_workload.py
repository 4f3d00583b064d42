"""The workload: a DataFrame, an array and small values, a mapped fan-out with fan-in, a task
that fails on its first try, and a consumer that checks every value against its producer's
digest. ``conf``: ``seed``, ``rows`` (frame rows), ``fan`` (mapped width), ``flaky`` (fail
try 1 of ``flaky``), ``hold`` (seconds producers wait, to keep runs overlapping).
"""

from __future__ import annotations

import time
from datetime import timedelta

import xd_common as C
from airflow.sdk import dag, get_current_context, task

DEFAULTS = {"retries": 2, "retry_delay": timedelta(seconds=2)}


def _conf() -> dict:
    conf = get_current_context()["dag_run"].conf or {}
    return {
        "seed": int(conf.get("seed", 1)),
        "rows": int(conf.get("rows", 100_000)),
        "fan": int(conf.get("fan", 4)),
        "flaky": bool(conf.get("flaky", True)),
        "hold": float(conf.get("hold", 0)),
    }


@dag(dag_id="xd_workload", schedule=None, catchup=False, default_args=DEFAULTS,
     max_active_runs=8, tags=["xcomstash-deploy"])
def xd_workload():
    @task
    def make_frame():
        c = _conf()
        time.sleep(c["hold"])
        value = C.frame(c["seed"], c["rows"])
        C.record(get_current_context()["ti"], "return_value", value)
        return value

    @task
    def make_array():
        c = _conf()
        value = C.array(c["seed"], c["rows"] // 2, 6)
        C.record(get_current_context()["ti"], "return_value", value)
        return value

    @task
    def make_small():
        c = _conf()
        value = C.small(c["seed"])
        C.record(get_current_context()["ti"], "return_value", value)
        return value

    @task
    def parts():
        return list(range(_conf()["fan"]))

    @task
    def shard(i: int):
        value = C.shard(_conf()["seed"], i)
        C.record(get_current_context()["ti"], "return_value", value)
        return value

    @task
    def combine(values):
        ti = get_current_context()["ti"]
        values = list(values)  # the lazy sequence: fetched concurrently / read ahead
        digests = ti.xcom_pull(task_ids="shard", key="digest_return_value")
        digests = C.as_list(digests)
        if len(values) != len(digests):
            raise AssertionError(f"{C.LOG_WRONG} fan-in got {len(values)} values, {len(digests)} digests")
        for i, (value, expected) in enumerate(zip(values, digests)):
            C.verify(f"shard[{i}]", value, expected)
        summary = {"n": len(values), "digests": C.digest(digests)}
        C.record(ti, "return_value", summary)
        return summary

    @task
    def flaky():
        ti = get_current_context()["ti"]
        c = _conf()
        value = C.array(c["seed"], 20_000, 3, "flaky")
        if c["flaky"] and ti.try_number == 1:
            # Push something large first: the retry must not see it, and it must not leak.
            ti.xcom_push(key="partial", value=C.noise(c["seed"], 300_000, "partial"))
            raise RuntimeError("XD-FLAKY planned failure on try 1")
        C.record(ti, "return_value", value)
        return value

    @task
    def check(frame, array, small, flaky_value, combined):
        ti = get_current_context()["ti"]
        for task_id, value in (("make_frame", frame), ("make_array", array), ("make_small", small),
                               ("flaky", flaky_value), ("combine", combined)):
            C.verify(task_id, value, ti.xcom_pull(task_ids=task_id, key="digest_return_value"))
        return {"verified": 5}

    combined = combine(shard.expand(i=parts()))
    check(make_frame(), make_array(), make_small(), flaky(), combined)


xd_workload()


@dag(dag_id="xd_cross", schedule=None, catchup=False, default_args={"retries": 0},
     tags=["xcomstash-deploy"])
def xd_cross():
    """Pull another DAG's values (by run id from conf) and check them against its digests."""

    @task
    def pull_other():
        ti = get_current_context()["ti"]
        source = get_current_context()["dag_run"].conf["source_run_id"]
        for task_id in ("make_frame", "make_array", "make_small"):
            value = ti.xcom_pull(dag_id="xd_workload", task_ids=task_id, run_id=source)
            expected = ti.xcom_pull(dag_id="xd_workload", task_ids=task_id, run_id=source,
                                    key="digest_return_value")
            C.verify(f"xd_workload/{source}/{task_id}", value, expected)
        return {"verified": 3, "source": source}

    pull_other()


xd_cross()
