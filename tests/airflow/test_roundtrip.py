"""One run of xcs_roundtrip (TaskFlow returns, classic push/pull, mapped fan-in) through
xcomstash, then checks on what the tasks saw and on what ended up in the xcom table and store."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.harness.airflow import MARKER, AirflowEnv, DagRunResult, XComRow
from xcomstash.coordinate import XComCoordinate

pytestmark = pytest.mark.airflow

DAG_ID = "xcs_roundtrip"
MAPPED = 6
ODD_KEY = "report/2026 Q1"


@pytest.fixture(scope="module")
def roundtrip(make_airflow_env) -> tuple[AirflowEnv, DagRunResult]:
    env = make_airflow_env("roundtrip", dags=["xcs_roundtrip.py"])
    run = env.dags_test(DAG_ID)
    run.assert_success()
    return env, run


def rows_by_coordinate(env: AirflowEnv, run: DagRunResult) -> dict[tuple[str, int, str], XComRow]:
    return {(r.task_id, r.map_index, r.key): r for r in env.xcom_rows(DAG_ID, run.run_id)}


def test_taskflow_values_arrive_byte_identical(roundtrip) -> None:
    """DataFrame, ndarray, np.float64, bytes, small dict, small frame and large JSON: the
    consumer rebuilt each expected value, compared it exactly and checked the producer's digest."""
    env, run = roundtrip
    assert run.task_state("check_values") == "success"
    assert env.xcom_value(DAG_ID, run.run_id, "check_values") == [
        "frame", "array", "bytes", "np.float64", "small_dict", "small_frame", "big_json",
    ]


def test_small_values_are_stored_inline_exactly_as_basexcom_stores_them(roundtrip) -> None:
    """Below the threshold the row holds what ``airflow.sdk.serde.serialize`` makes of the
    value (what BaseXCom would store), computed here independently in a separate process."""
    env, run = roundtrip
    expected = serde_forms(env)
    rows = rows_by_coordinate(env, run)
    inline = {
        ("make_scalar", -1, "return_value"): expected["scalar"],
        ("make_small_dict", -1, "return_value"): expected["small_dict"],
        ("make_small_frame", -1, "return_value"): expected["small_frame"],
        ("classic_push", -1, "small_meta"): expected["small_meta"],
        ("make_frame", -1, "digest"): expected["frame_digest"],
        ("fan_out", 1, "return_value"): expected["mapped_1"],
        ("fan_out", 3, "return_value"): expected["mapped_3"],
        ("fan_out", 5, "return_value"): expected["mapped_5"],
    }
    for coordinate, form in inline.items():
        assert coordinate in rows, coordinate
        assert rows[coordinate].value == form, coordinate
        assert not rows[coordinate].is_reference
    # np.float64 keeps its type through serde (not a bare float).
    assert rows[("make_scalar", -1, "return_value")].value["__classname__"] == "numpy.float64"


def test_large_values_are_stored_as_references_with_a_summary(roundtrip) -> None:
    env, run = roundtrip
    rows = rows_by_coordinate(env, run)
    expected = {
        ("make_frame", -1, "return_value"): ("pandas.arrow-ipc", "DataFrame 60,000 rows x 6 cols"),
        ("make_array", -1, "return_value"): ("numpy.npy", "ndarray float32 400 x 150"),
        ("make_bytes", -1, "return_value"): ("bytes", "bytes 200,000 bytes"),
        ("make_big_json", -1, "return_value"): ("json", "list 4,000 items"),
        ("classic_push", -1, "big_table"): ("numpy.npy", "ndarray float32 400 x 150"),
        # bytes are always stored: BaseXCom cannot hold them, however small
        ("classic_push", -1, "tiny_bytes"): ("bytes", "bytes 6 bytes"),
        ("classic_push", -1, ODD_KEY): ("json", "list 4,000 items"),
        **{("fan_out", i, "return_value"): ("numpy.npy", "ndarray float64 20,000") for i in (0, 2, 4)},
    }
    for coordinate, (codec, summary) in expected.items():
        row = rows[coordinate]
        assert row.is_reference, coordinate
        ref = row.value
        assert ref[MARKER] == 1
        # Signed by default (a keyset is created for the local store on first use).
        assert set(ref) == {MARKER, "summary", "type", "codec", "size", "uri", "digest", "xcom", "mac"}
        assert ref["xcom"] == XComCoordinate(DAG_ID, run.run_id, *coordinate).as_dict()
        assert (ref["codec"], ref["summary"]) == (codec, summary), coordinate
        assert ref["digest"].startswith("blake3:")
        task_id, map_index, key = coordinate
        path = env.object_path(ref)
        # dag/run/.blobs/<digest>.xcs, and a link dag/run/.links/task/map_index/key/<digest>,
        # each part percent-encoded ("report%2F2026%20Q1")
        xcom = XComCoordinate(DAG_ID, run.run_id, task_id, map_index, key)
        assert path.relative_to(env.store).as_posix() == xcom.blob_key(ref["digest"])
        assert xcom.link_key(ref["digest"]) in env.store_links()
        assert path.stat().st_size == ref["size"], coordinate
    odd = rows[("classic_push", -1, ODD_KEY)].value
    assert any(link.split("/")[-2] == "report%2F2026%20Q1" for link in env.store_links()), odd
    # The store holds exactly the referenced objects: nothing inline was written there, no
    # temporary files were left behind.
    referenced = {env.object_path(r.value).relative_to(env.store).as_posix() for r in rows.values() if r.is_reference}
    assert set(env.store_objects()) == referenced
    # one object per distinct payload (identical values of one run share a blob)
    assert len(referenced) == len({r.value["digest"] for r in rows.values() if r.is_reference})


def test_classic_xcom_push_and_pull_with_custom_keys(roundtrip) -> None:
    env, run = roundtrip
    assert run.task_state("classic_push") == "success"
    assert run.task_state("classic_pull") == "success"
    assert env.xcom_value(DAG_ID, run.run_id, "classic_pull") == [
        "big_table", "small_meta", "tiny_bytes", "odd_key", "digests_of_three_tasks", "absent_key_is_none",
    ]
    keys = {r.key for r in env.xcom_rows(DAG_ID, run.run_id, "classic_push")}
    assert keys == {"big_table", "table_digest", "small_meta", "tiny_bytes", ODD_KEY}  # no return_value


def test_mapped_fan_in_receives_all_values_in_order(roundtrip) -> None:
    """Six map indexes, stored (even) and inline (odd) mixed, read lazily, all at once
    (the backend's concurrent get_all) and singly; each value is checked against its index."""
    env, run = roundtrip
    for i in range(MAPPED):
        assert run.task_state("fan_out", i) == "success"
    assert run.task_state("fan_in") == "success"
    assert env.xcom_value(DAG_ID, run.run_id, "fan_in") == {
        "lazy": MAPPED,
        "eager": MAPPED,
        "types": ["ndarray", "dict"] * (MAPPED // 2),
    }
    # Every stored map index was read back (lazily and in the fan-in) from its own object.
    pulled = [e for e in env.trace("pull") if e["xcom"].get("task_id") == "fan_out"]
    assert sorted({e["xcom"]["map_index"] for e in pulled if e["route"] == "stored"}) == [0, 2, 4]


def test_trace_file_records_each_push_and_pull(roundtrip) -> None:
    env, run = roundtrip
    pushes = env.trace("push")
    stored = {(e["xcom"]["task_id"], e["xcom"]["map_index"], e["xcom"]["key"]) for e in pushes if e["route"] == "stored"}
    references = {(r.task_id, r.map_index, r.key) for r in env.xcom_rows(DAG_ID, run.run_id) if r.is_reference}
    assert stored == references
    inline = {(e["xcom"]["task_id"], e["xcom"]["key"]) for e in pushes if e["route"] == "inline"}
    assert ("make_scalar", "return_value") in inline and ("make_frame", "digest") in inline
    for event in pushes:
        assert event["xcom"]["dag_id"] == DAG_ID and event["xcom"]["run_id"] == run.run_id


SERDE_FORMS = """
import json, sys
import xcs_values as V
from airflow.sdk.serde import serialize
forms = {
    "scalar": serialize(V.scalar()),
    "small_dict": serialize(V.small_dict()),
    "small_frame": serialize(V.small_frame()),
    "small_meta": serialize({"rows": 400, "cols": 150, "ok": True}),
    "frame_digest": serialize(V.frame_digest(V.big_frame())),
    **{f"mapped_{i}": serialize(V.mapped_value(i)) for i in (1, 3, 5)},
}
print("SERDE-FORMS " + json.dumps(forms))
"""


def serde_forms(env: AirflowEnv) -> dict[str, Any]:
    result = env.python(SERDE_FORMS)
    result.assert_ok()
    line = next(l for l in result.stdout.splitlines() if l.startswith("SERDE-FORMS "))
    return json.loads(line[len("SERDE-FORMS ") :])
