"""Backward compatibility: XComs written by BaseXCom and by common.io's object-storage backend
stay readable after switching ``[core] xcom_backend`` to xcomstash.

One source DAG runs three times into the same metadata DB: under BaseXCom (the default),
under common.io with a 10-byte threshold, and under common.io with gzip. Then a sink DAG runs
under xcomstash (keeping ``[common.io] xcom_objectstorage_path``) and pulls every value of
each of those runs by run id. One common.io object is deleted before the sink runs.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.airflow import COMMON_IO_BACKEND, AirflowEnv, DagRunResult, XComRow, raised_exceptions

pytestmark = pytest.mark.airflow

SOURCE, SINK = "xcs_legacy_source", "xcs_legacy_sink"
CHECKED = ["number", "text", "record", "rows", "frame", "returned", "mapped"]


@dataclass
class Legacy:
    env: AirflowEnv
    sources: dict[str, DagRunResult]
    sink: DagRunResult
    cio_path: str
    rows: dict[str, list[XComRow]]  # each source run's rows, as the sink found them
    cio_files: set[Path]  # common.io's objects, as the sink found them
    rerun: DagRunResult  # "produce" of the gzip run, run again under xcomstash
    unconfigured: DagRunResult  # "read_common_io" again, with the common.io path setting removed
    returned: dict[str, object]  # what each reader returned in the sink run (before the re-run)

    def file(self, uri: str) -> Path:
        assert uri.startswith(f"file://{self.env.root}/"), uri
        return self.env.root / uri[len(f"file://{self.env.root}/") :]


@pytest.fixture(scope="module")
def legacy(make_airflow_env) -> Legacy:
    env = make_airflow_env("compat", dags=["xcs_legacy.py"])
    cio_path = f"file://{env.root}/cio"
    common_io = {
        "AIRFLOW__CORE__XCOM_BACKEND": COMMON_IO_BACKEND,
        "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH": cio_path,
        "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD": "10",
    }
    sources = {
        "basexcom": env.dags_test(
            SOURCE, logical_date="2026-01-01T00:00:00+00:00", env={"AIRFLOW__CORE__XCOM_BACKEND": None}
        ),
        "common_io": env.dags_test(SOURCE, logical_date="2026-01-02T00:00:00+00:00", env=common_io),
        "common_io_gzip": env.dags_test(
            SOURCE,
            logical_date="2026-01-03T00:00:00+00:00",
            env={**common_io, "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_COMPRESSION": "gzip"},
        ),
    }
    for run in sources.values():
        run.assert_success()
    assert env.store_objects() == {}  # nothing went through xcomstash so far

    doomed = env.xcom_value(SOURCE, sources["common_io"].run_id, "produce", "doomed")
    assert isinstance(doomed, str) and doomed.startswith(cio_path), doomed
    (env.root / doomed[len(f"file://{env.root}/") :]).unlink()

    # Switch to xcomstash; the common.io path setting stays, as the README asks, and (signing
    # being on by default) unsigned rows are accepted for objects older than the switch.
    env.config["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH"] = cio_path
    switched = datetime.now(timezone.utc) + timedelta(seconds=1)
    env.config["AIRFLOW__XCOMSTASH__ACCEPT_UNSIGNED_REFERENCES"] = switched.isoformat()
    time.sleep(max(0.0, (switched - datetime.now(timezone.utc)).total_seconds()))
    with env.one_process():  # the sink run and the re-run: one Airflow process
        sink = env.dags_test(
            SINK,
            logical_date="2026-01-04T00:00:00+00:00",
            conf={"runs": {label: run.run_id for label, run in sources.items()}, "doomed": "common_io"},
        )
        rows = {label: env.xcom_rows(SOURCE, run.run_id) for label, run in sources.items()}
        cio_files = {p for p in (env.root / "cio").rglob("*") if p.is_file()}

        # Re-run one old task under xcomstash: Airflow purges its earlier XComs first.
        rerun = env.tasks_test(SOURCE, "produce", sources["common_io_gzip"].run_id)
    returned = {task: env.xcom_value(SINK, sink.run_id, task) for task in ("read_common_io", "read_common_io_gzip")}
    # The common.io path setting dropped (as after a config clean-up): its rows must not come
    # back as path strings.
    unconfigured = env.tasks_test(
        SINK, "read_common_io", sink.run_id, env={"AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH": None}
    )
    return Legacy(env, sources, sink, cio_path, rows, cio_files, rerun, unconfigured, returned)


def test_values_written_by_basexcom_are_read_by_xcomstash(legacy) -> None:
    env, sink = legacy.env, legacy.sink
    rows = legacy.rows["basexcom"]
    assert rows and not any(r.is_reference or (isinstance(r.value, str) and "://" in r.value) for r in rows)
    assert sink.task_state("read_basexcom") == "success", sink.task_log("read_basexcom")[-3000:]
    assert env.xcom_value(SINK, sink.run_id, "read_basexcom") == CHECKED


@pytest.mark.parametrize("label,gzip", [("common_io", False), ("common_io_gzip", True)])
def test_values_written_by_common_io_are_read_by_xcomstash(legacy, label: str, gzip: bool) -> None:
    env, sink, cio_path = legacy.env, legacy.sink, legacy.cio_path
    rows = {(r.task_id, r.map_index, r.key): r.value for r in legacy.rows[label]}
    # common.io kept the 1-byte number inline and wrote everything else as objects, leaving
    # their paths (<uuid>, or <uuid>.gz when compressed) in the rows.
    assert rows.pop(("produce", -1, "number")) == 7
    assert len(rows) == 5 + 1 + 3  # produce: text record rows frame doomed; returned; 3 mapped
    for path in rows.values():
        assert isinstance(path, str) and path.startswith(cio_path + "/"), path
        assert path.endswith(".gz") == gzip, path
    files = [legacy.file(p) for p in rows.values()]
    missing = [f.name for f in files if f not in legacy.cio_files]
    assert len(missing) == (1 if label == "common_io" else 0)  # the object the fixture deleted

    task_id = f"read_{label}"
    assert sink.task_state(task_id) == "success", sink.task_log(task_id)[-3000:]
    assert legacy.returned[task_id] == CHECKED


def test_deleted_common_io_object_fails_with_object_missing(legacy) -> None:
    """Where common.io would return the dangling path string as the value, xcomstash raises."""
    sink = legacy.sink
    doomed = next(r.value for r in legacy.rows["common_io"] if r.key == "doomed")
    log = sink.task_log("read_missing")
    assert sink.task_state("read_missing") == "failed"
    assert "XCS-WRONG-VALUE" not in log, log[-3000:]
    name, message = raised_exceptions(log)[-1]
    assert name == "xcomstash.errors.ObjectMissingError", (name, message)
    assert doomed in message


def test_common_io_rows_without_the_common_io_path_setting_fail_naming_it(legacy) -> None:
    """A common.io row whose base is no longer configured is a typed error that names the
    setting to restore, never the path string handed over as the value."""
    log = legacy.unconfigured.output
    assert "XCS-WRONG-VALUE" not in log and raised_exceptions(log), log[-3000:]
    name, message = raised_exceptions(log)[-1]
    assert name == "xcomstash.errors.LegacyRowError", (name, message)
    assert "xcom_objectstorage_path" in message and "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH" in message
    assert legacy.cio_path in message  # the row's path, so the operator sees which base it needs


def test_rerun_of_a_common_io_task_purges_its_old_objects(legacy) -> None:
    """After the switch, re-running a task whose XComs common.io wrote deletes those objects
    (Airflow purges a task's XComs when it starts again; xcomstash knows common.io paths)."""
    env, cio_path = legacy.env, legacy.cio_path
    legacy.rerun.assert_ok()
    run_id = legacy.sources["common_io_gzip"].run_id
    before = {(r.task_id, r.map_index, r.key): r.value for r in legacy.rows["common_io_gzip"]}
    old_produce = [v for (t, _, k), v in before.items() if t == "produce" and k != "number"]
    assert len(old_produce) == 5 and all(legacy.file(p).suffix == ".gz" for p in old_produce)
    assert not any(legacy.file(p).exists() for p in old_produce)
    # The other tasks' common.io objects are untouched.
    others = [v for (t, _, _), v in before.items() if t != "produce"]
    assert others and all(legacy.file(p).exists() for p in others)
    # The new values are xcomstash's: small, so inline, exactly as BaseXCom would keep them.
    after = {r.key: r.value for r in env.xcom_rows(SOURCE, run_id, "produce")}
    assert after["number"] == 7 and after["text"] == "a string long enough for the common.io threshold"
    assert after["record"] == {"id": 42, "ok": True, "scores": [1.5, 2.5], "note": "ß"}
    assert not any(isinstance(v, str) and v.startswith(cio_path) for v in after.values())
