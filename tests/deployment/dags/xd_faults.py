"""DAGs the fault tests break things under.

- ``xd_gated``: ``width`` mapped producers wait at a gate (so the test can stop or slow the
  store while they are running), then push ``nbytes`` of incompressible data each; a consumer
  checks every value. Retries as set in ``conf`` (``retries``, ``retry_delay``).
- ``xd_big``: one producer writes its pid to the shared directory, then returns a large value
  (a multipart upload the test can SIGKILL the process in the middle of); a consumer checks it.
- ``xd_corrupt_source`` / ``xd_corrupt_sink``: values pushed by one run, damaged by the test,
  then pulled by another run that must fail with the integrity error, never a wrong value.
"""

from __future__ import annotations

import os
from datetime import timedelta

import xd_common as C
from airflow.sdk import dag, get_current_context, task


EXECUTION_TIMEOUT_S = 90


def _conf() -> dict:
    return dict(get_current_context()["dag_run"].conf or {})


@dag(dag_id="xd_gated", schedule=None, catchup=False, max_active_runs=4,
     default_args={"retries": 3, "retry_delay": timedelta(seconds=3)}, tags=["xcomstash-deploy"])
def xd_gated():
    @task
    def widths():
        return list(range(int(_conf().get("width", 3))))

    # A hung store must surface as the store's own timeout, long before this limit.
    @task(execution_timeout=timedelta(seconds=EXECUTION_TIMEOUT_S))
    def produce(i: int):
        ti = get_current_context()["ti"]
        c = _conf()
        if ti.try_number == 1 and c.get("gate"):
            C.wait_for_gate(c["gate"])
        value = C.noise(int(c.get("seed", 1)), int(c.get("nbytes", 2_000_000)), "gated", i)
        C.record(ti, "return_value", value)
        print(f"XD-PUSHING try={ti.try_number} bytes={value.nbytes}", flush=True)
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


xd_gated()


@dag(dag_id="xd_big", schedule=None, catchup=False,
     default_args={"retries": 2, "retry_delay": timedelta(seconds=2)}, tags=["xcomstash-deploy"])
def xd_big():
    @task
    def upload():
        ti = get_current_context()["ti"]
        c = _conf()
        value = C.noise(int(c.get("seed", 1)), int(c.get("nbytes", 64 * 1024 * 1024)), "big")
        C.record(ti, "return_value", value)
        (C.shared_dir() / f"pid-{ti.run_id}-try{ti.try_number}").write_text(str(os.getpid()))
        return value

    @task(retries=0)
    def check(value):
        ti = get_current_context()["ti"]
        C.verify("upload", value, ti.xcom_pull(task_ids="upload", key="digest_return_value"))
        return value.nbytes

    check(upload())


xd_big()


CORRUPT_KEYS = ("flip", "truncate", "intact")


@dag(dag_id="xd_corrupt_source", schedule=None, catchup=False, tags=["xcomstash-deploy"])
def xd_corrupt_source():
    @task
    def produce():
        ti = get_current_context()["ti"]
        seed = int(_conf().get("seed", 1))
        for key in CORRUPT_KEYS:
            value = C.array(seed, 40_000, 4, key)
            C.record(ti, key, value)
            ti.xcom_push(key=key, value=value)

    produce()


xd_corrupt_source()


@dag(dag_id="xd_corrupt_sink", schedule=None, catchup=False, default_args={"retries": 0},
     tags=["xcomstash-deploy"])
def xd_corrupt_sink():
    def reader(key: str):
        @task(task_id=f"read_{key}")
        def read():
            ti = get_current_context()["ti"]
            source = _conf()["source_run_id"]
            value = ti.xcom_pull(dag_id="xd_corrupt_source", task_ids="produce", key=key, run_id=source)
            expected = ti.xcom_pull(dag_id="xd_corrupt_source", task_ids="produce",
                                    key=f"digest_{key}", run_id=source)
            return C.verify(key, value, expected)

        return read()

    for key in CORRUPT_KEYS:
        reader(key)


xd_corrupt_sink()
