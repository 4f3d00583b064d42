"""``store_value(coordinate, key, value)``: the hook newer Airflow versions call instead of
``serialize_value`` (common.io's backend already implements it). It must give the same row
value as ``serialize_value`` for the same XCom, and that value must read back.

Runs in a child process: importing Airflow pins its configuration (AIRFLOW_HOME) for the
whole process, and the pytest process must stay free of it.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.airflow

CHILD = r'''
import inspect, json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xcs_values as V
from airflow.providers.common.io.xcom.backend import XComObjectStorageBackend
from xcomstash.airflow.backend import XComStashBackend


@dataclass(frozen=True)
class Coordinate:  # what the newer hook passes: the XCom's identity as attributes
    dag_id: str
    run_id: str
    task_id: str
    map_index: int


class Row:
    def __init__(self, value):
        self.value = value


values = {
    "small_dict": V.small_dict(),
    "scalar": V.scalar(),
    "array": V.big_array(),
    "bytes": b"\x00\x01\x02",
    "frame": V.big_frame(rows=20_000),
    "big_json": V.big_json(),
}
report = {"signature_matches_common_io": list(inspect.signature(XComStashBackend.store_value).parameters)
          == list(inspect.signature(XComObjectStorageBackend.store_value).parameters)}
for map_index in (-1, 3):
    coordinate = Coordinate("fwd_dag", "manual__2026-01-01T00:00:00+00:00", "fwd_task", map_index)
    for key, value in values.items():
        old = XComStashBackend.serialize_value(
            value, key=key, dag_id=coordinate.dag_id, run_id=coordinate.run_id,
            task_id=coordinate.task_id, map_index=map_index,
        )
        new = XComStashBackend.store_value(coordinate, key, value)
        back = XComStashBackend.deserialize_value(Row(json.loads(json.dumps(new))))
        if isinstance(value, pd.DataFrame):
            same = back.equals(value) and list(back.dtypes) == list(value.dtypes)
        elif isinstance(value, np.ndarray):
            same = V.array_digest(back) == V.array_digest(value)
        else:
            same = type(back) is type(value) and back == value
        report[f"{key}@{map_index}"] = {
            "equal": old == new,
            "stored": isinstance(new, dict) and "__xcomstash__" in new,
            "uri": new.get("uri") if isinstance(new, dict) else None,
            "round_trip": bool(same),
        }
print("XCS-REPORT " + json.dumps(report))
'''


def test_store_value_returns_what_serialize_value_returns(make_airflow_env) -> None:
    env = make_airflow_env("forward_compat")
    # Pinned on the per-XCom layout, where both hooks must write the very same object.
    env.config["AIRFLOW__XCOMSTASH__DEDUP"] = "False"
    result = env.python(CHILD)
    result.assert_ok()
    line = next(l for l in result.stdout.splitlines() if l.startswith("XCS-REPORT "))
    report = json.loads(line[len("XCS-REPORT ") :])

    assert report.pop("signature_matches_common_io") is True
    stored = {"array", "bytes", "frame", "big_json"}
    for name, outcome in report.items():
        key, map_index = name.split("@")
        assert outcome["equal"], name
        assert outcome["round_trip"], name
        assert outcome["stored"] == (key in stored), name
        if outcome["stored"]:
            assert outcome["uri"] == (
                f"file://{env.store}/fwd_dag/manual__2026-01-01T00:00:00+00:00/fwd_task/{map_index}/{key}.xcs"
            )
    # One object per coordinate: store_value overwrote what serialize_value wrote.
    assert len(env.store_objects()) == 2 * len(stored)
