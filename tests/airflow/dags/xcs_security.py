"""DAGs for the security tests (encryption, signed references, restricted reads, masking).

``xcs_sec_source`` stores arrays (offloaded, encrypted and signed when keys are configured) and
a value only task ``read_allowed`` may read. ``xcs_sec_sink`` (and its copy under another DAG
id, ``xcs_sec_other_sink``) has ``read_<key>`` tasks that pull one value of a source run given
in the run conf, only for the keys listed there, and fail with XCS-WRONG-VALUE on anything but
the exact value. ``xcs_sec_secrets`` returns a dict holding a connection password and an AWS
key, and ``consume`` prints what it pulled (so an unmasked secret would reach the task log).
"""

from __future__ import annotations

import numpy as np
import xcs_values as V
from airflow.sdk import Connection, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from xcomstash import Restricted

SOURCE = "xcs_sec_source"
KEYS = ("first", "second", "edited", "forged", "hostile", "copied")
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


def payload(key: str) -> np.ndarray:
    return np.random.default_rng(V.SEED + 100 + len(key) * 7 + sum(map(ord, key))).standard_normal(20_000)


@dag(dag_id=SOURCE, schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_sec_source():
    @task
    def produce() -> None:
        ti = get_current_context()["ti"]
        for key in KEYS:
            ti.xcom_push(key=key, value=payload(key))

    @task
    def restricted():
        return Restricted(payload("restricted"), tasks=["read_allowed"])

    @task
    def read_allowed(value) -> str:
        if V.array_digest(value) != V.array_digest(payload("restricted")):
            raise AssertionError("XCS-WRONG-VALUE restricted")
        return V.array_digest(value)

    @task
    def read_denied() -> str:
        value = get_current_context()["ti"].xcom_pull(task_ids="restricted")
        print(f"XCS-WRONG-VALUE read_denied received {type(value).__name__}")
        raise AssertionError("XCS-WRONG-VALUE read_denied")

    r = restricted()
    read_allowed(r)
    r >> read_denied()
    produce()


def _make_reader(key: str):
    @task(task_id=f"read_{key}")
    def read() -> str:
        context = get_current_context()
        conf = context["dag_run"].conf
        if key not in conf["keys"]:
            raise AirflowSkipException(f"{key} is not part of this run")
        value = context["ti"].xcom_pull(
            dag_id=conf.get("source_dag", SOURCE), task_ids=conf.get("source_task", "produce"), key=key,
            run_id=conf["source_run_id"],
        )
        if value is None or V.array_digest(value) != V.array_digest(payload(conf.get("expect", {}).get(key, key))):
            print(f"XCS-WRONG-VALUE {key}: received {type(value).__name__} {str(value)[:80]}")
            raise AssertionError(f"XCS-WRONG-VALUE for {key}")
        return V.array_digest(value)

    return read()


@dag(dag_id="xcs_sec_sink", schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_sec_sink():
    for key in KEYS:
        _make_reader(key)


@dag(dag_id="xcs_sec_other_sink", schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_sec_other_sink():
    @task
    def own() -> None:
        """Pushes one value, whose row the test overwrites with a reference of another DAG."""
        get_current_context()["ti"].xcom_push(key="copied", value=payload("own"))

    @task
    def read_copied() -> str:
        value = get_current_context()["ti"].xcom_pull(task_ids="own", key="copied")
        if value is None or V.array_digest(value) != V.array_digest(payload("own")):
            print(f"XCS-WRONG-VALUE read_copied received {type(value).__name__}")
            raise AssertionError("XCS-WRONG-VALUE read_copied")
        return V.array_digest(value)

    own() >> read_copied()


@dag(dag_id="xcs_sec_secrets", schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_sec_secrets():
    @task(show_return_value_in_logs=False)
    def leak():  # no "-> dict": one XCom holding the whole dict (not multiple_outputs)
        conn = Connection.get("xcs_db")
        return {
            "host": conn.host,
            "credential": conn.password,  # no sensitive key name: found as Airflow's registered secret
            "note": f"ops key {AWS_KEY} rotates monthly",
            "rows": 3,
        }

    @task
    def consume(value: dict) -> None:
        print(f"XCS-CONSUMED {value!r}")

    consume(leak())


xcs_sec_source()
xcs_sec_sink()
xcs_sec_other_sink()
xcs_sec_secrets()
