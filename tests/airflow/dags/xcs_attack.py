"""DAGs for replaying attacks by someone who may only write XCom rows (REST API, SQL), on the
README's default configuration.

``xcs_attack_victim`` holds another DAG's data: a DataFrame, and a value only its task
``consume`` may read. ``xcs_attack_reader.produce`` pushes one value per key of ``KEYS``;
the test then overwrites those rows with what an attacker would write, and runs
``read_all``, which pulls every key (``xcom_pull``, and ``pull_table`` for the ``*_table``
keys), never fails, and writes what each read returned or raised to the JSON file named by
``XCS_ATTACK_OUT``.
"""

from __future__ import annotations

import json
import os

import xcs_values as V
from airflow.sdk import dag, get_current_context, task

from xcomstash import Restricted

VICTIM = "xcs_attack_victim"
READER = "xcs_attack_reader"
KEYS = (
    "legit", "copied", "copied_table", "edited", "stripped", "unsigned_stripped", "plain", "traversal",
    "traversal_keyset",
)


@dag(dag_id=VICTIM, schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_attack_victim():
    @task
    def secret_frame():
        return V.big_frame(rows=20_000)

    @task
    def restricted():
        return Restricted(V.big_array(), tasks=["consume"])

    @task
    def consume(value) -> str:
        return V.array_digest(value)

    secret_frame()
    consume(restricted())


@dag(dag_id=READER, schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_attack_reader():
    @task
    def produce() -> None:
        ti = get_current_context()["ti"]
        for n, key in enumerate(KEYS):  # distinct values: one object each
            value = V.big_frame(rows=5_000, seed=V.SEED + n)
            if key == "unsigned_stripped":  # readable by another task of this DAG only
                value = Restricted(value, tasks=["consume_only"])
            ti.xcom_push(key=key, value=value)

    @task
    def read_all() -> None:
        from xcomstash.airflow.tables import pull_table

        ti = get_current_context()["ti"]
        out = {}
        for key in KEYS:
            try:
                if key.endswith("_table"):
                    value = pull_table("produce", key=key, columns=["f64"])
                else:
                    value = ti.xcom_pull(task_ids="produce", key=key)
                out[key] = {"ok": type(value).__name__, "head": repr(value)[:200]}
            except Exception as exc:  # the test asserts on what each read raised
                out[key] = {"error": type(exc).__name__, "message": str(exc)[:500]}
        path = os.environ.get("XCS_ATTACK_OUT")
        if path:
            with open(path, "w") as f:
                json.dump(out, f)

    produce() >> read_all()


xcs_attack_victim()
xcs_attack_reader()
