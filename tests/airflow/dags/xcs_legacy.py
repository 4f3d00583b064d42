"""Values written by another XCom backend, read after switching to xcomstash.

``xcs_legacy_source`` runs under BaseXCom or common.io's XComObjectStorageBackend; it uses
only types both can store. ``xcs_legacy_sink`` runs under xcomstash and reads those runs, whose
ids it gets in its run conf: ``{"runs": {"<label>": "<run id>", ...}, "doomed": "<label>"}``.
"""

from __future__ import annotations

import xcs_values as V
from airflow.sdk import dag, get_current_context, task

SOURCE = "xcs_legacy_source"
MAPPED = 3


@dag(dag_id=SOURCE, schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_legacy_source():
    @task
    def produce() -> None:
        ti = get_current_context()["ti"]
        for key, value in V.legacy_values().items():
            ti.xcom_push(key=key, value=value)

    @task(multiple_outputs=False)
    def returned():
        return V.legacy_values()["record"]

    @task
    def mapped(i: int):
        return V.legacy_mapped(i)

    produce()
    returned()
    mapped.expand(i=list(range(MAPPED)))


def _reader(label: str):
    @task(task_id=f"read_{label}")
    def read() -> list:
        context = get_current_context()
        ti, run_id = context["ti"], context["dag_run"].conf["runs"][label]
        checked = []
        for key, expected in V.legacy_values().items():
            if key == "doomed":
                continue
            got = ti.xcom_pull(dag_id=SOURCE, task_ids="produce", key=key, run_id=run_id)
            assert V.same(got, expected), f"{key}: {got!r} != {expected!r}"
            checked.append(key)
        got = ti.xcom_pull(dag_id=SOURCE, task_ids="returned", run_id=run_id)
        assert got == V.legacy_values()["record"], got
        checked.append("returned")
        got = ti.xcom_pull(dag_id=SOURCE, task_ids="mapped", run_id=run_id)  # get_all
        assert got == [V.legacy_mapped(i) for i in range(MAPPED)], got
        checked.append("mapped")
        return checked

    return read()


@task
def read_missing() -> None:
    """The common.io object behind ``doomed`` was deleted: common.io itself would hand back the
    path string as if it were the value; xcomstash must raise instead."""
    context = get_current_context()
    conf = context["dag_run"].conf
    got = context["ti"].xcom_pull(dag_id=SOURCE, task_ids="produce", key="doomed", run_id=conf["runs"][conf["doomed"]])
    print(f"XCS-WRONG-VALUE doomed: received {got!r}")
    raise AssertionError("XCS-WRONG-VALUE: a value came back for a deleted object")


@dag(dag_id="xcs_legacy_sink", schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_legacy_sink():
    for label in ("basexcom", "common_io", "common_io_gzip"):
        _reader(label)
    read_missing()


xcs_legacy_source()
xcs_legacy_sink()
