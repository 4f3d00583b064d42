"""The soak workload: small enough to run many times in a few minutes on two cores, built so
that clears and retries change what is stored. ``conf``: ``seed``, ``kind`` (frame | array |
small), ``fail`` (task ids that fail their first try).

Each value depends on the task's try number, so a cleared or retried task pushes different
bytes than its previous try: a reader that got the old bytes (a stale cache entry, an object
the retry failed to replace) fails its digest check.
"""

from __future__ import annotations

from datetime import timedelta

import xd_common as C
from airflow.sdk import dag, get_current_context, task


def _conf() -> dict:
    return dict(get_current_context()["dag_run"].conf or {})


def _maybe_fail(ti, conf: dict) -> None:
    if ti.task_id in conf.get("fail", []) and ti.try_number == 1:
        raise RuntimeError(f"XD-FLAKY planned failure of {ti.task_id} on try 1")


@dag(dag_id="xd_soak", schedule=None, catchup=False, max_active_runs=16,
     default_args={"retries": 2, "retry_delay": timedelta(seconds=1)}, tags=["xcomstash-deploy"])
def xd_soak():
    @task
    def produce():
        ti = get_current_context()["ti"]
        c = _conf()
        seed, kind = int(c["seed"]), c.get("kind", "array")
        if kind == "frame":
            value = C.frame(seed * 100 + ti.try_number, 15_000)
        elif kind == "array":
            value = C.array(seed, 12_000 + seed, 5, "produce", ti.try_number)
        else:
            value = C.small(seed * 100 + ti.try_number)
        side = C.noise(seed, 150_000, "side", ti.try_number)  # a second, custom-key push
        C.record(ti, "side", side)
        ti.xcom_push(key="side", value=side)
        _maybe_fail(ti, c)
        C.record(ti, "return_value", value)
        return value

    @task
    def relay(value):
        ti = get_current_context()["ti"]
        c = _conf()
        C.verify("produce", value, ti.xcom_pull(task_ids="produce", key="digest_return_value"))
        side = ti.xcom_pull(task_ids="produce", key="side")
        C.verify("produce.side", side, ti.xcom_pull(task_ids="produce", key="digest_side"))
        _maybe_fail(ti, c)
        out = C.array(int(c["seed"]), 8_000, 3, "relay", ti.try_number)
        C.record(ti, "return_value", out)
        return out

    @task
    def consume(value, relayed):
        ti = get_current_context()["ti"]
        C.verify("produce", value, ti.xcom_pull(task_ids="produce", key="digest_return_value"))
        C.verify("relay", relayed, ti.xcom_pull(task_ids="relay", key="digest_return_value"))
        _maybe_fail(ti, _conf())
        result = {"seed": _conf()["seed"], "try": ti.try_number}
        C.record(ti, "return_value", result)
        return result

    value = produce()
    consume(value, relay(value))


xd_soak()
