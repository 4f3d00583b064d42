"""TaskFlow returns, classic push/pull with custom keys, and a mapped fan-out/fan-in.

Every consumer rebuilds the expected value (xcs_values) and compares it with what it received
and with the digest the producer pushed, so a wrong value fails the run. Consumers return the
list of checks they made, so the test can tell a check that ran from one that was skipped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xcs_values as V
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import dag, get_current_context, task


ODD_KEY = "report/2026 Q1"


def _ti():
    return get_current_context()["ti"]


def classic_push(ti):
    ti.xcom_push(key="big_table", value=V.big_array(seed=7))
    ti.xcom_push(key="table_digest", value=V.array_digest(V.big_array(seed=7)))
    ti.xcom_push(key="small_meta", value={"rows": 400, "cols": 150, "ok": True})
    ti.xcom_push(key="tiny_bytes", value=b"\x00\xffxcom")
    ti.xcom_push(key=ODD_KEY, value=V.big_json())  # "/" and " " in a key: percent-encoded in the store


def classic_pull(ti):
    checked = []
    big = ti.xcom_pull(task_ids="classic_push", key="big_table")
    assert V.array_digest(big) == ti.xcom_pull(task_ids="classic_push", key="table_digest")
    assert V.array_digest(big) == V.array_digest(V.big_array(seed=7))
    checked.append("big_table")
    assert ti.xcom_pull(task_ids="classic_push", key="small_meta") == {"rows": 400, "cols": 150, "ok": True}
    checked.append("small_meta")
    tiny = ti.xcom_pull(task_ids="classic_push", key="tiny_bytes")
    assert type(tiny) is bytes and tiny == b"\x00\xffxcom", tiny
    checked.append("tiny_bytes")
    assert ti.xcom_pull(task_ids="classic_push", key=ODD_KEY) == V.big_json()
    checked.append("odd_key")
    # Several task ids at once: a list, in the order asked for.
    digests = ti.xcom_pull(task_ids=["make_frame", "make_array", "make_bytes"], key="digest")
    assert digests == [
        V.frame_digest(V.big_frame()),
        V.array_digest(V.big_array()),
        V.sha256(V.big_bytes()),
    ], digests
    checked.append("digests_of_three_tasks")
    assert ti.xcom_pull(task_ids="classic_push", key="no_such_key") is None
    checked.append("absent_key_is_none")
    return checked


@dag(dag_id="xcs_roundtrip", schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_roundtrip():
    @task
    def make_frame() -> pd.DataFrame:
        df = V.big_frame()
        _ti().xcom_push(key="digest", value=V.frame_digest(df))
        return df

    @task
    def make_array() -> np.ndarray:
        a = V.big_array()
        _ti().xcom_push(key="digest", value=V.array_digest(a))
        return a

    @task
    def make_bytes() -> bytes:
        b = V.big_bytes()
        _ti().xcom_push(key="digest", value=V.sha256(b))
        return b

    @task
    def make_scalar():
        return V.scalar()

    @task(multiple_outputs=False)
    def make_small_dict():
        return V.small_dict()

    @task
    def make_small_frame():
        return V.small_frame()

    @task
    def make_big_json():
        return V.big_json()

    @task
    def check_values(frame, array, blob, scalar, small, small_df, big_json) -> list:
        ti = _ti()
        checked = []

        assert isinstance(frame, pd.DataFrame)
        assert V.frame_digest(frame) == ti.xcom_pull(task_ids="make_frame", key="digest")
        pd.testing.assert_frame_equal(frame, V.big_frame(), check_exact=True)
        checked.append("frame")

        assert type(array) is np.ndarray
        assert V.array_digest(array) == ti.xcom_pull(task_ids="make_array", key="digest")
        assert array.dtype == np.float32 and array.flags.f_contiguous
        checked.append("array")

        assert type(blob) is bytes and V.sha256(blob) == ti.xcom_pull(task_ids="make_bytes", key="digest")
        checked.append("bytes")

        assert type(scalar) is np.float64, type(scalar)
        assert scalar.tobytes() == V.scalar().tobytes()
        checked.append("np.float64")

        assert small == V.small_dict(), small
        checked.append("small_dict")

        pd.testing.assert_frame_equal(small_df, V.small_frame(), check_exact=True)
        checked.append("small_frame")

        assert big_json == V.big_json()
        checked.append("big_json")
        return checked

    @task
    def fan_out(i: int):
        return V.mapped_value(i)

    @task
    def fan_in(values) -> dict:
        # 1. Airflow's lazy sequence, read one by one (GetXComSequenceItem per element).
        lazy = list(values)
        assert len(lazy) == V.MAPPED_COUNT, len(lazy)
        for i, v in enumerate(lazy):
            V.assert_mapped_value(i, v)
        # 2. All map indexes at once (XCom.get_all: the backend's concurrent fan-in).
        eager = _ti().xcom_pull(task_ids="fan_out")
        assert isinstance(eager, list) and len(eager) == V.MAPPED_COUNT, type(eager)
        for i, v in enumerate(eager):
            V.assert_mapped_value(i, v)
        # 3. One map index.
        V.assert_mapped_value(3, _ti().xcom_pull(task_ids="fan_out", map_indexes=3))
        return {"lazy": len(lazy), "eager": len(eager), "types": [type(v).__name__ for v in lazy]}

    frame, array, blob = make_frame(), make_array(), make_bytes()
    check_values(
        frame,
        array,
        blob,
        make_scalar(),
        make_small_dict(),
        make_small_frame(),
        make_big_json(),
    )
    push = PythonOperator(task_id="classic_push", python_callable=classic_push)
    pull = PythonOperator(task_id="classic_pull", python_callable=classic_pull)
    push >> pull
    [frame, array, blob] >> pull  # classic_pull reads their digests
    parts = fan_out.expand(i=list(range(V.MAPPED_COUNT)))
    fan_in(parts)


xcs_roundtrip()
