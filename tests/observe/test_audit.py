from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

import pytest

from xcomstash.observe import audit
from xcomstash.observe.audit import AuditEvent, AuditLog, LoggingSink, Query, StoreSink, parse_time, read_events
from xcomstash.cli import main
from xcomstash.stores import LocalStore


def xcom(dag="d", run="r", task="t", key="k"):
    return {"dag_id": dag, "run_id": run, "task_id": task, "map_index": -1, "key": key}


def test_store_sink_buffers_successes_and_flushes_failures_at_once(tmp_path) -> None:
    store = LocalStore(tmp_path)
    sink = StoreSink(store, flush_events=3, flush_seconds=3600)
    sink.write(AuditEvent("push", "ok", xcom()))
    assert list(store.list(audit.PREFIX)) == []
    sink.write(AuditEvent("pull", "denied", xcom(), error="AccessDeniedError: no"))
    objects = list(store.list(audit.PREFIX))
    assert len(objects) == 1 and objects[0].key.endswith(".jsonl")
    assert [e.op for e in read_events(store)] == ["push", "pull"]
    for _ in range(3):
        sink.write(AuditEvent("push", "ok", xcom()))
    assert len(list(store.list(audit.PREFIX))) == 2


def test_query_filters_by_dag_run_key_op_outcome_and_time(tmp_path) -> None:
    store = LocalStore(tmp_path)
    log = AuditLog([StoreSink(store, flush_events=1)])
    old = (datetime.now(timezone.utc) - timedelta(days=3)).isoformat()
    log.record(AuditEvent("push", "ok", xcom("a", "r1", key="x"), ts=old))
    log.record(AuditEvent("pull", "ok", xcom("a", "r2", key="y")))
    log.record(AuditEvent("pull", "failed", xcom("b", "r1", key="x"), error="IntegrityError: bad"))
    def q(**kw):
        return [(e.xcom["dag_id"], e.op) for e in read_events(store, Query(**kw))]
    assert q(dag_id="a") == [("a", "push"), ("a", "pull")]
    assert q(key="x") == [("a", "push"), ("b", "pull")]
    assert q(run_id="r1", op="pull") == [("b", "pull")]
    assert q(outcome="failed") == [("b", "pull")]
    assert q(since=parse_time("1d")) == [("a", "pull"), ("b", "pull")]
    assert q(until=parse_time("2d")) == [("a", "push")]


def test_unwritable_store_never_raises_into_the_task(tmp_path, caplog) -> None:
    target = tmp_path / "file"
    target.write_text("not a directory")
    sink = StoreSink(LocalStore(target), flush_events=1)
    AuditLog([sink]).record(AuditEvent("push", "ok", xcom()))
    assert "could not write 1 events" in caplog.text and "unsaved" in caplog.text


def test_logging_sink_attaches_the_event(caplog) -> None:
    caplog.set_level(logging.INFO, logger="xcomstash.observe.audit")
    LoggingSink().write(AuditEvent("purge", "ok", xcom(), uri="file:///s/x"))
    record = caplog.records[-1]
    assert record.xcomstash_audit["op"] == "purge" and "uri=file:///s/x" in record.getMessage()


def test_malformed_lines_are_skipped(tmp_path) -> None:
    store = LocalStore(tmp_path)
    with store.writer(f"{audit.PREFIX}/2026-11-23/x.jsonl") as f:
        f.write(b'not json\n{"op": "push", "outcome": "ok", "xcom": {"dag_id": "d"}}\n')
    assert [e.op for e in read_events(store)] == ["push"]


def test_parse_time() -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)
    assert parse_time("2h", now=now) == datetime(2026, 11, 23, 10, tzinfo=timezone.utc)
    assert parse_time("2026-11-23") == datetime(2026, 11, 23, tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_cli_prints_json_lines_and_a_table(tmp_path, capsys) -> None:
    store = LocalStore(tmp_path)
    AuditLog([StoreSink(store, flush_events=1)]).record(AuditEvent("push", "ok", xcom("dag_x"), size=1234))
    assert main(["audit", "--store-url", f"file://{tmp_path}", "--dag", "dag_x", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(l)["xcom"]["dag_id"] for l in lines] == ["dag_x"]
    assert main(["audit", "--store-url", f"file://{tmp_path}", "--since", "1h"]) == 0
    out = capsys.readouterr().out
    assert "1 audit events" in out and "1,234" in out
    assert main(["audit", "--store-url", f"file://{tmp_path}", "--since", "soon"]) == 2
