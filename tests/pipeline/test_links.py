"""Operator extra links in exclusive mode (src/xcomstash/pipeline/links.py): a ``_link_*`` value
stays a plain row and is read back as one, only in a link's shape; anything else under such a
key is refused on push and on pull; the push and pull are audited and traced all the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.codecs.json import StructureConverter
from xcomstash.errors import (
    ExtraLinkValueError,
    PlainRowError,
    SensitiveDataError,
    TypeNotAllowedError,
    ValueTooLargeError,
)
from xcomstash.observe.audit import AuditLog, Query, StoreSink, read_events
from xcomstash.observe.events import DENIED, OK, REJECTED
from xcomstash.observe.events import LINK as LINK_ROUTE
from xcomstash.pipeline.links import MAX_LINK_BYTES, MAX_LINK_DEPTH, is_link_key, link_problem
from xcomstash.security.guard import Guard, SecurityConfig
from xcomstash.security.readers import Expected, Restricted
from xcomstash.security.rules import Rules, ValueRule
from xcomstash.stores import open_store

URL = "https://airflow.example.com/dags/target/runs/manual__2026-12-03"
LINK = XComCoordinate("etl", "run_1", "trigger", -1, "_link_TriggerDagRunLink")
AS_ASKED = Expected(dag_id="etl", run_id="run_1", task_id="trigger", map_index=-1, key="_link_TriggerDagRunLink")


def engine_at(root: Path, *, exclusive: bool = True, accept_plain_rows: bool = False, rules: Rules | None = None,
              converter: StructureConverter | None = None, trace_file: Path | None = None) -> Engine:
    config = StashConfig(store_url=f"file://{root}", read_ahead=False, cache_dir=None, exclusive=exclusive,
                         accept_plain_rows=accept_plain_rows)
    store = open_store(config.store_url)
    guard = Guard(SecurityConfig(rules=rules or Rules()), AuditLog([StoreSink(store, flush_events=1)]))
    extra = {"converter": converter} if converter is not None else {}
    return Engine(config, store, guard=guard, trace_file=str(trace_file) if trace_file else None, **extra)


def stored_objects(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.xcs")] if root.exists() else []


def events(engine: Engine, **query: Any) -> list[Any]:
    engine.flush()
    return list(read_events(engine.store, Query(**query)))


def test_link_keys_are_those_airflow_builds_operator_links_from() -> None:
    assert is_link_key("_link_TriggerDagRunLink") and is_link_key("_link_")
    for key in ("return_value", "link", "_link", "_linkTrigger", "x_link_y", "", None):
        assert not is_link_key(key)


@pytest.mark.parametrize("value", [URL, "", {"url": URL, "label": "run"}, ["a", 1, 2.5, True, None], 7])
def test_exclusive_mode_keeps_a_link_value_in_the_row_and_reads_it_back(tmp_path, value) -> None:
    engine = engine_at(tmp_path / "store")
    row = engine.serialize(value, LINK)
    assert row == value and json.loads(json.dumps(row)) == value  # the API server's json.loads sees the URL
    assert stored_objects(tmp_path / "store") == []
    assert engine.deserialize(row, LINK) == value  # the row's own XCom known (maintenance)
    assert engine.deserialize(row, expected=AS_ASKED) == value  # a task's xcom_pull


def test_exclusive_mode_still_stores_the_same_value_under_any_other_key(tmp_path) -> None:
    engine = engine_at(tmp_path / "store")
    for key in ("return_value", "link", "_linkTrigger", "trigger_run_id"):
        row = engine.serialize(URL, XComCoordinate("etl", "run_1", "trigger", -1, key))
        assert "__xcomstash__" in row, key
    with pytest.raises(PlainRowError, match="exclusive mode writes only references"):
        engine.deserialize(URL, XComCoordinate("etl", "run_1", "trigger", -1, "trigger_run_id"))


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def _cycle() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


NOT_LINKS = {
    "long string": ("https://x/" + "a" * MAX_LINK_BYTES, "larger than"),
    "bytes": (b"\x00\x01binary", "bytes is not plain JSON"),
    "array": (np.arange(10), "not plain JSON"),
    "tuple": (("a", "b"), "tuple is not plain JSON"),
    "many small items": (list(range(5000)), "larger than"),
    "many items, each short": (list(range(1000, 3000)), "bytes of JSON, more than"),
    "NaN": (float("nan"), "not plain JSON"),
    "int key": ({1: "a"}, "dict key of type int"),
    "marker": ({"__xcomstash__": 1, "uri": "file:///etc/passwd"}, "xcomstash reference"),
    "deep": (_nested(MAX_LINK_DEPTH + 1), "deeper than"),
    "cycle": (_cycle(), "deeper than"),
    "huge int": (10**5000, "not plain JSON"),
}


@pytest.mark.parametrize("name", list(NOT_LINKS))
def test_anything_but_a_link_under_a_link_key_is_refused_on_push_and_nothing_is_written(tmp_path, name) -> None:
    value, why = NOT_LINKS[name]
    engine = engine_at(tmp_path / "store")
    with pytest.raises(ExtraLinkValueError, match=why) as err:
        engine.serialize(value, LINK)
    assert "_link_TriggerDagRunLink" in str(err.value) and err.value.rule == "extra_link"
    assert stored_objects(tmp_path / "store") == []
    (refused,) = events(engine, op="push")
    assert refused.outcome == REJECTED and refused.xcom["key"] == "_link_TriggerDagRunLink"


def test_the_size_bound_counts_bytes_of_json_exactly() -> None:
    fits = "a" * (MAX_LINK_BYTES - 2)  # plus the two quotes
    assert link_problem(fits) is None
    assert f"4,097 bytes of JSON, more than {MAX_LINK_BYTES:,}" in (link_problem(fits + "a") or "")
    escaped = "\n" * (MAX_LINK_BYTES // 2)  # each newline is two bytes of JSON ("\n")
    assert f"more than {MAX_LINK_BYTES:,}" in (link_problem(escaped) or "")
    assert link_problem(_nested(MAX_LINK_DEPTH)) is None


@pytest.mark.parametrize(
    "row, why",
    [("https://x/" + "a" * MAX_LINK_BYTES, "larger than"), (_nested(MAX_LINK_DEPTH + 1), "deeper than")],
)
def test_a_plain_row_under_a_link_key_that_is_not_a_link_is_refused_on_pull(tmp_path, row, why) -> None:
    engine = engine_at(tmp_path / "store")
    for kwargs in ({"coordinate": LINK}, {"expected": AS_ASKED}):
        with pytest.raises(PlainRowError, match=why) as err:
            engine.deserialize(row, **kwargs)
        assert "operator extra-link key" in str(err.value)
    denied = events(engine, op="pull")
    assert [e.outcome for e in denied] == [DENIED, DENIED]
    assert all(e.xcom["key"] == "_link_TriggerDagRunLink" for e in denied)


def test_a_plain_row_is_refused_where_the_key_it_was_read_for_is_unknown(tmp_path) -> None:
    """Airflow's lazy sequence of mapped outputs names no key: no exception without one."""
    engine = engine_at(tmp_path / "store")
    with pytest.raises(PlainRowError, match="exclusive mode writes only references"):
        engine.deserialize(URL, expected=Expected(dag_id="etl", run_id="run_1"))


def test_link_push_and_pull_are_audited_and_traced_without_audit_inline(tmp_path) -> None:
    trace = tmp_path / "trace.jsonl"
    engine = engine_at(tmp_path / "store", trace_file=trace)
    assert engine.guard.config.audit_inline is False
    row = engine.serialize(URL, LINK)
    engine.deserialize(row, expected=AS_ASKED)
    audited = events(engine)
    assert [(e.op, e.outcome, e.route) for e in audited] == [("push", OK, LINK_ROUTE), ("pull", OK, LINK_ROUTE)]
    assert all(e.xcom["key"] == "_link_TriggerDagRunLink" and e.size == len(json.dumps(URL)) for e in audited)
    traced = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [(t["op"], t["route"], t["xcom"]["key"]) for t in traced] == [
        ("push", LINK_ROUTE, "_link_TriggerDagRunLink"), ("pull", LINK_ROUTE, "_link_TriggerDagRunLink"),
    ]


def test_a_link_row_is_read_as_plain_json_never_through_the_structure_converter(tmp_path) -> None:
    """In Airflow the converter is serde, which builds objects from ``__classname__`` dicts:
    a link row may have been written by anyone who may write XComs."""
    converted: list[Any] = []
    converter = StructureConverter(from_structure=lambda s: converted.append(s) or ("converted", s))
    engine = engine_at(tmp_path / "store", converter=converter)
    row = {"__classname__": "builtins.dict", "__version__": 1, "__data__": {}}
    assert engine.deserialize(row, expected=AS_ASKED) == row
    assert converted == []


def test_a_link_value_still_meets_the_dags_rules(tmp_path) -> None:
    secret = URL + "?token=AKIAIOSFODNN7EXAMPLE"
    rejecting = engine_at(tmp_path / "a", rules=Rules(ValueRule(sensitive_data="reject")))
    with pytest.raises(SensitiveDataError):
        rejecting.serialize(secret, LINK)
    masking = engine_at(tmp_path / "b", rules=Rules(ValueRule(sensitive_data="mask")))
    assert masking.serialize(secret, LINK) == URL + "?token=***"
    json_only = engine_at(tmp_path / "c", rules=Rules(ValueRule(allowed_types=("pandas.DataFrame",))))
    with pytest.raises(TypeNotAllowedError, match="allowed_types"):
        json_only.serialize(URL, LINK)
    small = engine_at(tmp_path / "d", rules=Rules(ValueRule(max_value_bytes=10)))
    with pytest.raises(ValueTooLargeError, match="max_value_bytes"):
        small.serialize(URL, LINK)


def test_a_restricted_link_value_is_stored_as_its_producer_asked(tmp_path) -> None:
    engine = engine_at(tmp_path / "store")
    row = engine.serialize(Restricted(URL), LINK)
    assert "__xcomstash__" in row and row["readers"] == {"dag_id": "etl"}


def test_a_read_scope_rule_does_not_store_links(tmp_path) -> None:
    """Airflow writes each operator link's URL into its row itself when the task finishes,
    plain and without the backend: a read scope cannot protect it, only break the link."""
    engine = engine_at(tmp_path / "store", rules=Rules(ValueRule(read_scope="dag")))
    assert engine.serialize(URL, LINK) == URL
    assert "__xcomstash__" in engine.serialize(URL, XComCoordinate("etl", "run_1", "trigger", -1, "return_value"))


def test_outside_exclusive_mode_link_keys_route_like_any_other(tmp_path) -> None:
    engine = engine_at(tmp_path / "store", exclusive=False)
    big = "https://x/" + "a" * 100_000
    row = engine.serialize(big, LINK)  # over the threshold: stored, not refused
    assert "__xcomstash__" in row and engine.deserialize(row, LINK) == big
    assert engine.serialize(b"\x00", LINK) != b"\x00"  # bytes: stored as ever
    assert engine.serialize(URL, LINK) == URL


def test_accept_plain_rows_reads_link_rows_like_any_plain_row(tmp_path) -> None:
    engine = engine_at(tmp_path / "store", accept_plain_rows=True)
    big = "https://x/" + "a" * 10_000
    assert engine.deserialize(big, LINK) == big
