"""Migration of BaseXCom and common.io rows into xcomstash, interrupted for real at random
steps (the process is killed through XCOMSTASH_MIGRATE_FAULT) and resumed until done.

Afterwards every value is read back by a real Airflow task and compared with what the
producer pushed, every row is an xcomstash reference, the store holds exactly the referenced
objects (no duplicates from the interrupted attempts) and the common.io objects are gone.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import random
import shutil

import pytest

from tests.airflow.dagfiles import DAGS_SOURCE
from tests.harness.airflow import COMMON_IO_BACKEND

pytestmark = pytest.mark.airflow

SOURCE, SINK = "xcs_legacy_source", "xcs_legacy_sink"
STEPS = ("written", "verified", "replaced", "legacy_deleted")


@pytest.fixture(scope="module")
def legacy_env(make_env):
    env = make_env("migrate", "sqlite")
    shutil.copy(DAGS_SOURCE / "xcs_legacy.py", env.dags_folder / "xcs_legacy.py")
    cio_path = f"file://{env.root}/cio"
    common_io = {
        "AIRFLOW__CORE__XCOM_BACKEND": COMMON_IO_BACKEND,
        "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH": cio_path,
        "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD": "10",
    }
    runs = {
        "basexcom": env.dags_test(SOURCE, logical_date="2026-01-01T00:00:00+00:00",
                                  env={"AIRFLOW__CORE__XCOM_BACKEND": None}),
        "common_io": env.dags_test(SOURCE, logical_date="2026-01-02T00:00:00+00:00", env=common_io),
    }
    for run in runs.values():
        run.assert_success()
    env.config["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH"] = cio_path
    env.config["AIRFLOW__XCOMSTASH__THRESHOLD"] = "0"  # offload every value on migration
    # References are signed by default: common.io rows (unsigned) are read while migrating,
    # for objects written before the switch, as the README asks.
    switched = datetime.now(timezone.utc) + timedelta(seconds=1)
    env.config["AIRFLOW__XCOMSTASH__ACCEPT_UNSIGNED_REFERENCES"] = switched.isoformat()
    time.sleep(max(0.0, (switched - datetime.now(timezone.utc)).total_seconds()))
    return env, runs


def cio_files(env) -> set[str]:
    return {str(p) for p in (env.root / "cio").rglob("*") if p.is_file()}


def test_dry_run_counts_and_changes_nothing(legacy_env) -> None:
    env, runs = legacy_env
    before = env.xcom_rows()
    doc = env.xcomstash_json("migrate", "--dry-run")
    cio_prefix = f"file://{env.root}/cio"
    paths = [r for r in before if isinstance(r.value, str) and r.value.startswith(cio_prefix)]
    assert paths and len(paths) < len(env.xcom_rows(SOURCE, runs["common_io"].run_id))  # "number" stayed inline
    assert doc["migrated_common_io"] == len(paths)
    assert doc["migrated_basexcom"] == len(before) - len(paths)  # threshold 0: every inline row moves
    assert env.xcom_rows() == before and env.store_keys() == set()


def test_interrupted_migration_resumes_without_losing_or_duplicating_a_value(legacy_env) -> None:
    env, runs = legacy_env
    rng = random.Random(20261123)
    assert cio_files(env)
    crashes = 0
    for attempt in range(40):
        step = rng.choice(STEPS)
        nth = rng.randint(1, 4)
        result = env.xcomstash("migrate", "--delete-legacy", "--json",
                               env={"XCOMSTASH_MIGRATE_FAULT": f"{step}:{nth}"})
        if result.returncode == 75:
            crashes += 1
            continue
        assert result.returncode == 0, result.describe()
        break
    else:
        pytest.fail("migration never finished")
    assert crashes >= 3, f"the faults should have interrupted several attempts, got {crashes}"
    final = env.xcomstash_json("migrate", "--delete-legacy")
    assert final["migrated_basexcom"] == final["migrated_common_io"] == 0  # nothing left to do
    rows = env.xcom_rows(SOURCE)
    assert rows and all(r.is_reference for r in rows), [r for r in rows if not r.is_reference]
    assert cio_files(env) == set(), "common.io objects are deleted once their rows switched"
    assert env.store_keys() == env.referenced_keys(), "no object left over from interrupted attempts"

    sink = env.dags_test(SINK, logical_date="2026-01-04T00:00:00+00:00",
                         conf={"runs": {"basexcom": runs["basexcom"].run_id,
                                        "common_io": runs["common_io"].run_id,
                                        "common_io_gzip": runs["common_io"].run_id},
                               "doomed": "common_io"})
    for label in ("basexcom", "common_io"):
        assert sink.task_state(f"read_{label}") == "success", sink.task_log(f"read_{label}")[-4000:]


def test_a_moved_store_keeps_old_values_readable_and_move_brings_them_over(legacy_env) -> None:
    """store_url moves to a new directory with the old one in previous_store_urls: verify
    reads every value where it is; ``xcomstash move`` copies them over and rewrites the rows;
    then the new store alone serves them and the old one holds no value."""
    env, _ = legacy_env
    old, new = env.store, env.root / "store-moved"
    references = len([r for r in env.xcom_rows() if r.is_reference])
    env.config["AIRFLOW__XCOMSTASH__STORE_URL"] = f"file://{new}"
    env.config["AIRFLOW__XCOMSTASH__PREVIOUS_STORE_URLS"] = f"file://{old}"
    before = env.xcomstash_json("verify", "--quiet")
    assert before["ok"] == before["references"] == references and before["corrupt"] == 0, before
    dry = env.xcomstash_json("move", "--dry-run", "--quiet")
    assert dry["moved"] == references and dry["deleted"] == 0, dry
    moved = env.xcomstash_json("move", "--quiet")
    assert moved["moved"] == references and moved["complete"] and moved["deleted"] > 0, moved
    del env.config["AIRFLOW__XCOMSTASH__PREVIOUS_STORE_URLS"]
    after = env.xcomstash_json("verify", "--quiet")
    assert after["ok"] == references and after["corrupt"] == after["missing"] == 0, after
    assert all(r.value["uri"].startswith(f"file://{new.resolve()}/") for r in env.xcom_rows() if r.is_reference)
    left = [k for k in (str(p.relative_to(old)) for p in old.rglob("*") if p.is_file())
            if not k.startswith("!") and ".tmp-" not in k]
    assert left == [], left
