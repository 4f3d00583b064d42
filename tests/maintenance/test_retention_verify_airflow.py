"""Retention policies and verify on real Airflow runs (SQLite).

Four runs of ``xcs_gc_other`` (one stored value each) and one of ``xcs_gc`` (which no policy
matches). The retention tests run in order on the same installation, each asserting exactly
which runs lose their rows and that the store then holds exactly what the rest reference.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

pytestmark = pytest.mark.airflow

DATES = [f"2026-01-0{i}T00:00:00+00:00" for i in range(1, 5)]
POLICY_DAG = "xcs_gc_oth*"


@pytest.fixture(scope="module")
def runs(make_env):
    env = make_env("retention", "sqlite")
    env.config["AIRFLOW__XCOMSTASH__COMPRESSION"] = "zstd"  # stats report a compression ratio
    other = []
    with env.one_process():  # five runs in a row: one Airflow process
        for date in DATES:
            run = env.dags_test("xcs_gc_other", logical_date=date)
            run.assert_success()
            other.append(run.run_id)
        env.dags_test("xcs_gc", logical_date=DATES[0]).assert_success()
    # Make the ages unambiguous: run 0 is 40 days old, run 1 ten days, the rest fresh.
    now = datetime.now(timezone.utc)
    for run_id, days in ((other[0], 40), (other[1], 10), (other[2], 0.002), (other[3], 0.001)):
        stamp = (now - timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S.%f")
        assert env.execute("UPDATE dag_run SET run_after = ? WHERE run_id = ? AND dag_id = 'xcs_gc_other'", (stamp, run_id)) == 1
    return env, other


def runs_with_rows(env, dag_id: str) -> set[str]:
    return {r.run_id for r in env.xcom_rows(dag_id)}


def retention(env, policies: list[dict], *extra: str) -> dict:
    return env.xcomstash_json("retention", "--policies", json.dumps(policies), *extra)


def test_stats_count_inline_and_stored_values_by_dag_and_codec(runs) -> None:
    env, _ = runs
    rows = env.xcom_rows()
    stored = [r for r in rows if r.is_reference]
    inline = [r for r in rows if not r.is_reference]
    doc = env.xcomstash_json("stats", "--top", "3", "--compression-sample", "-1")
    assert doc["rows"] == len(rows)
    assert doc["inline"]["count"] == len(inline) > 0
    assert doc["stored"]["count"] == len(stored)
    assert doc["stored"]["bytes"] == sum(r.value["size"] for r in stored)
    unique = {r.value["uri"]: r.value["size"] for r in stored}
    assert doc["stored"]["unique_objects"] == len(unique) < len(stored), "twin_a and twin_b share a blob"
    assert doc["stored"]["unique_bytes"] == sum(unique.values())
    assert set(doc["by_dag"]) == {"xcs_gc", "xcs_gc_other"}
    assert doc["by_dag"]["xcs_gc_other"]["stored_count"] == 4
    assert doc["by_codec"]["bytes"]["count"] == len(stored)
    assert [x["bytes"] for x in doc["largest"]] == sorted((r.value["size"] for r in stored), reverse=True)[:3]
    assert doc["compression"]["objects_sampled"] == len(unique)
    assert doc["compression"]["ratio"] > 1  # the payloads repeat a short tag
    assert sum(d["inline_count"] + d["stored_count"] for d in doc["by_day"].values()) == len(rows)


def test_max_age_drops_exactly_the_runs_older_than_it(runs) -> None:
    env, other = runs
    gc_rows = env.xcom_rows("xcs_gc")
    plan = retention(env, [{"dag_id": POLICY_DAG, "max_age": "30d"}], "--dry-run")
    assert [p["run_id"] for p in plan["prune"]] == [other[0]]
    assert runs_with_rows(env, "xcs_gc_other") == set(other), "dry run changes nothing"
    done = retention(env, [{"dag_id": POLICY_DAG, "max_age": "30d"}])
    assert done["rows_deleted"] == 1 and done["objects_deleted"] == 2  # a blob and its link
    assert runs_with_rows(env, "xcs_gc_other") == set(other[1:])
    assert env.xcom_rows("xcs_gc") == gc_rows, "a DAG no policy matches is untouched"
    assert env.store_keys() == env.referenced_keys()


def test_keep_last_runs_keeps_the_newest(runs) -> None:
    env, other = runs
    done = retention(env, [{"dag_id": POLICY_DAG, "keep_last_runs": 2}])
    assert [p["run_id"] for p in done["prune"]] == [other[1]]
    assert runs_with_rows(env, "xcs_gc_other") == set(other[2:])
    assert env.store_keys() == env.referenced_keys()


def test_max_bytes_counts_from_the_newest_run_back(runs) -> None:
    env, other = runs
    sizes = {r.run_id: r.value["size"] for r in env.xcom_rows("xcs_gc_other")}
    budget = sizes[other[3]] + sizes[other[2]] // 2  # room for the newest run only
    done = retention(env, [{"dag_id": POLICY_DAG, "max_bytes": budget}])
    assert [p["run_id"] for p in done["prune"]] == [other[2]]
    assert runs_with_rows(env, "xcs_gc_other") == {other[3]}
    assert env.store_keys() == env.referenced_keys()


def test_bad_policy_fails_with_a_clear_message(runs) -> None:
    env, _ = runs
    result = env.xcomstash("retention", "--policies", '[{"dag_id": "x", "max_agee": "1d"}]')
    assert result.returncode == 1
    assert "unknown fields ['max_agee']" in result.stderr


def test_verify_finds_corrupt_and_missing_objects(runs) -> None:
    env, _ = runs
    clean = env.xcomstash_json("verify")
    assert clean["corrupt"] == clean["missing"] == 0 and clean["ok"] == clean["checked_rows"] > 0
    refs = {r.task_id: r.value for r in env.xcom_rows("xcs_gc") if r.is_reference}
    flipped = env.object_path(refs["big"])
    data = bytearray(flipped.read_bytes())
    from xcomstash.format import container

    layout = container.read_layout(len(data), lambda offset, n: bytes(data[offset:offset + n]))
    data[layout.body_offset] ^= 0x01  # first byte of the body: only a full check reads it
    flipped.write_bytes(bytes(data))
    env.object_path(refs["keys"]).unlink()

    quick = env.xcomstash_json("verify", "--quick", expect=2)
    assert quick["missing"] == 1 and quick["corrupt"] == 0
    full = env.xcomstash_json("verify", "--dag", "xcs_gc", expect=2)
    assert full["missing"] == 1 and full["corrupt"] == 1
    by_status = {p["status"]: p for p in full["problems"]}
    assert by_status["corrupt"]["uri"] == refs["big"]["uri"]
    assert by_status["missing"]["xcom"]["task_id"] == "keys"
    assert full["summary"].startswith("verify: ")
