"""One log line per operation on a stored value: the audit's when the audit logs (it then says
what the trace line would), the trace's otherwise; the durable audit record stays as it was."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from xcomstash import Engine, StashConfig
from xcomstash.coordinate import XComCoordinate
from xcomstash.observe.audit import AuditLog, LoggingSink, StoreSink, read_events
from xcomstash.security.guard import Guard, SecurityConfig
from xcomstash.stores import LocalStore

COORD = XComCoordinate("dag", "run", "task", -1, "return_value")


def test_with_the_audit_logging_each_stored_operation_logs_one_line_that_says_it_all(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="xcomstash")
    store = LocalStore(tmp_path / "audit")
    guard = Guard(SecurityConfig(), audit_log=AuditLog([LoggingSink(), StoreSink(store, flush_events=1)]))
    engine = Engine(StashConfig(store_url=f"file://{tmp_path / 's'}", threshold=0), guard=guard)
    engine.deserialize(engine.serialize(b"x" * 100_000, COORD), expected=None)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("xcomstash") and r.levelno == logging.INFO]
    assert len(lines) == 2, lines
    for op, line in zip(("push", "pull"), lines):
        assert line.startswith(f"xcomstash audit: {op} ok dag_id=dag") and "uri=file://" in line
        assert re.search(r" \(.+, [\d,]+ bytes in \d+\.\d{3}s\)$", line), line
    recorded = list(read_events(store))
    assert [e.op for e in recorded] == ["push", "pull"] and all(e.detail == "" for e in recorded)


def test_without_the_audit_the_trace_logs_the_stored_value(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="xcomstash")
    engine = Engine(StashConfig(store_url=f"file://{tmp_path}", threshold=0))
    engine.serialize(b"x" * 100_000, COORD)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("xcomstash") and r.levelno == logging.INFO]
    assert len(lines) == 1 and lines[0].startswith("xcomstash push return_value: ") and " bytes in " in lines[0]
    assert " at file://" in lines[0]
