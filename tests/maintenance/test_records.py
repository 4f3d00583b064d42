"""Maintenance run records (``!maintenance/``) and the storage overview built from them: what
each command leaves, how many are kept, growth between stats runs, notable audit events, and
what a viewer without access to a DAG does not see."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from xcomstash.format.keyspace import is_reserved
from xcomstash.maintenance import records
from xcomstash.maintenance.reconcile import ReconcileOptions, Reconciler
from xcomstash.observe.audit import AuditEvent, AuditLog, StoreSink
from xcomstash.stores import LocalStore

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)


def stats_report(by_dag: dict[str, tuple[int, int]], largest: list[tuple[int, str]] = ()) -> dict:
    return {
        "by_dag": {dag: {"inline_count": 0, "inline_bytes": 0, "stored_count": n, "stored_bytes": b} for dag, (n, b) in by_dag.items()},
        "largest": [{"bytes": b, "summary": "DataFrame", "xcom": {"dag_id": dag, "run_id": "r", "task_id": "t", "map_index": -1, "key": "return_value"}} for b, dag in largest],
    }


@pytest.fixture()
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_a_record_is_written_under_the_reserved_prefix_and_only_the_newest_are_kept(store: LocalStore) -> None:
    for i in range(records.KEEP + 5):
        records.record_run(store, "verify", {"ok": i}, summary=f"run {i}", exit_code=0, now=T0 + timedelta(minutes=i))
    keys = [info.key for info in store.list(records.PREFIX)]
    assert len(keys) == records.KEEP and all(is_reserved(k) and k.startswith("!maintenance/verify/") for k in keys)
    newest = records.last_runs(store, "verify", 2)
    assert [r["summary"] for r in newest] == [f"run {records.KEEP + 4}", f"run {records.KEEP + 3}"]
    assert newest[0]["report"] == {"ok": records.KEEP + 4} and newest[0]["finished"] == "2026-12-01T10:24:00Z"


def test_recorded_reports_are_trimmed_to_a_few_items_per_list() -> None:
    trimmed = records.trim({"problems": list(range(500)), "nested": {"sample": ["k"] * 30}})
    assert trimmed["problems"] == list(range(records.LIST_ITEMS)) and trimmed["problems_total"] == 500
    assert len(trimmed["nested"]["sample"]) == records.LIST_ITEMS
    with pytest.raises(ValueError, match="unknown maintenance command"):
        records.record_run(LocalStore("/nonexistent-unused"), "vacuum", {})


def test_a_store_that_refuses_the_record_does_not_fail_the_command(tmp_path: Path) -> None:
    from xcomstash.stores.faulty import FaultyStore

    assert records.record_run(FaultyStore(LocalStore(tmp_path), fail_writes=True), "stats", {}) is None


def test_reconcile_neither_collects_nor_reports_the_records(store: LocalStore) -> None:
    records.record_run(store, "stats", stats_report({"d": (1, 10)}), now=T0 - timedelta(days=30))
    report = Reconciler(store, ReconcileOptions(grace_seconds=0)).run(iter(()))
    assert report.deleted == 0 and report.foreign.count == 0 and report.orphans.count == 0
    assert records.last_runs(store, "stats", 1)


def test_growth_is_the_change_between_the_last_two_stats_runs(store: LocalStore) -> None:
    records.record_run(store, "stats", stats_report({"a": (2, 100), "gone": (1, 5)}), now=T0)
    records.record_run(store, "stats", stats_report({"a": (5, 400), "b": (1, 50)}, [(300, "a"), (50, "b")]), now=T0 + timedelta(hours=1))
    doc = records.overview(store)
    assert doc["stats"]["by_dag"] == {
        "a": {"objects": 5, "bytes": 400, "objects_change": 3, "bytes_change": 300},
        "b": {"objects": 1, "bytes": 50, "objects_change": 1, "bytes_change": 50},
    }
    assert doc["stats"]["totals"] == {"objects": 6, "bytes": 450, "objects_change": 4, "bytes_change": 350}
    assert [item["bytes"] for item in doc["stats"]["largest"]] == [300, 50]
    assert doc["stats"]["finished"] == "2026-12-01T11:00:00Z" and doc["stats"]["previous"] == "2026-12-01T10:00:00Z"


def test_a_single_stats_run_shows_sizes_without_growth_and_commands_never_run_say_so(store: LocalStore) -> None:
    records.record_run(store, "stats", stats_report({"a": (2, 100)}), now=T0)
    records.record_run(store, "reconcile", {"dry_run": True}, summary="reconcile (dry run): ...", exit_code=0, now=T0)
    doc = records.overview(store)
    assert doc["stats"]["by_dag"] == {"a": {"objects": 2, "bytes": 100}}
    assert doc["runs"]["reconcile"]["dry_run"] and doc["runs"]["reconcile"]["summary"].startswith("reconcile (dry run)")
    assert doc["runs"]["verify"] is None and doc["runs"]["retention"] is None


def test_notable_audit_events_are_denials_failures_and_failovers_newest_first(store: LocalStore) -> None:
    sink = StoreSink(store, flush_events=1)
    log = AuditLog([sink])
    x = {"dag_id": "a", "run_id": "r", "task_id": "t", "map_index": -1, "key": "k"}
    log.record(AuditEvent("pull", "ok", x, ts="2026-12-01T10:00:00.000Z"))
    log.record(AuditEvent("pull", "denied", x, error="AccessDeniedError: no", ts="2026-12-01T10:01:00.000Z"))
    log.record(AuditEvent("pull", "failed", dict(x, dag_id="b"), error="IntegrityError: bad", ts="2026-12-01T10:02:00.000Z"))
    log.record(AuditEvent("pull", "ok", x, failover=["replica:0: ObjectMissingError"], ts="2026-12-01T10:03:00.000Z"))
    sink.flush()
    events = records.notable_events(store)
    assert [e["why"] for e in events] == [
        "pull failed over (replica:0: ObjectMissingError)", "pull failed (IntegrityError)", "pull denied (AccessDeniedError)"
    ]
    only_a = records.notable_events(store, visible=lambda dag: dag == "a")
    assert [e["xcom"]["dag_id"] for e in only_a] == ["a", "a"]
    assert records.notable_events(store, max_objects=1) == events[:1]


def test_a_viewer_sees_only_the_dags_they_may_read_and_no_run_summaries_counting_others(store: LocalStore) -> None:
    records.record_run(store, "stats", stats_report({"mine": (1, 10), "theirs": (2, 20)}, [(20, "theirs"), (10, "mine")]), now=T0)
    records.record_run(store, "verify", {}, summary="verify: 3 references checked", now=T0)
    doc = records.overview(store, visible=lambda dag: dag == "mine")
    assert list(doc["stats"]["by_dag"]) == ["mine"] and doc["hidden_dags"] == 1
    assert [i["xcom"]["dag_id"] for i in doc["stats"]["largest"]] == ["mine"]
    assert doc["runs"] is None
    assert records.overview(store)["runs"]["verify"]["summary"] == "verify: 3 references checked"


def test_last_verification_says_which_values_the_newest_verify_run_found_a_problem_with(store: LocalStore) -> None:
    assert records.last_verification(store, ["file:///x"]) == {}
    report = {"problems": [{"status": "corrupt", "uri": "file:///bad", "detail": "digest mismatch", "xcom": {}}]}
    records.record_run(store, "verify", report, exit_code=2, now=T0)
    checked = records.last_verification(store, ["file:///bad", "file:///good"])
    assert checked["file:///bad"] == {"finished": "2026-12-01T10:00:00Z", "status": "corrupt", "detail": "digest mismatch"}
    assert checked["file:///good"]["status"] == "no problem reported"
    assert json.loads(store.get(next(iter(store.list("!maintenance/verify/"))).key))["exit_code"] == 2
