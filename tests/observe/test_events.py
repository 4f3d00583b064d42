"""One event per operation, handed to every subscriber; observation never breaks the data path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xcomstash import Engine, IntegrityError, StashConfig, XComCoordinate
from xcomstash.observe.events import Event, Observer

COORD = XComCoordinate("d", "r", "t", -1, "return_value")


class Collector:
    def __init__(self, inline: bool = False) -> None:
        self.wants_inline = inline
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def flush(self) -> None:
        pass


class Broken(Collector):
    def __call__(self, event: Event) -> None:
        raise RuntimeError("metrics backend down")


def test_observer_without_subscribers_is_inactive_and_wants_no_inline_events() -> None:
    observer = Observer()
    assert not observer.active and not observer.wants_inline
    observer.emit(Event("push", "ok", COORD))  # a no-op


def test_observer_wants_inline_events_when_any_subscriber_does() -> None:
    assert Observer([Collector(), Collector(inline=True)]).wants_inline


def test_failing_subscriber_does_not_fail_the_push_or_the_pull_nor_starve_the_others(tmp_path: Path) -> None:
    seen = Collector()
    engine = Engine(StashConfig(store_url=f"file://{tmp_path}", threshold=0), subscribers=[Broken(), seen])
    row = engine.serialize(b"payload" * 100, COORD)
    assert engine.deserialize(row, COORD) == b"payload" * 100
    assert [(e.op, e.outcome) for e in seen.events] == [("push", "ok"), ("pull", "ok")]


def test_one_event_per_operation_with_outcome_and_source(tmp_path: Path) -> None:
    seen = Collector()
    engine = Engine(StashConfig(store_url=f"file://{tmp_path}", threshold=0), subscribers=[seen])
    row = engine.serialize(b"x" * 5000, COORD)
    engine.deserialize(row, COORD)
    path = tmp_path / engine.store.key_for(row["uri"])
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(IntegrityError):
        engine.deserialize(row, COORD)
    engine.purge(row, COORD)
    assert [(e.op, e.outcome) for e in seen.events] == [("push", "ok"), ("pull", "ok"), ("pull", "failed"), ("purge", "ok")]
    push, pull = seen.events[0], seen.events[1]
    assert push.uri == row["uri"] and push.size == row["size"] and push.digest == row["digest"]
    assert pull.source == "store" and pull.seconds >= 0
    assert isinstance(seen.events[2].error, IntegrityError)


def test_inline_operations_are_emitted_when_any_subscriber_wants_them(tmp_path: Path) -> None:
    quiet, inline = Collector(), Collector(inline=True)
    engine = Engine(StashConfig(store_url=f"file://{tmp_path}"), subscribers=[quiet, inline])
    row = engine.serialize({"small": 1}, COORD)
    assert engine.deserialize(row, COORD) == {"small": 1}
    assert [(e.op, e.route) for e in inline.events] == [("push", "inline"), ("pull", "inline")]
    assert quiet.events == inline.events  # fanned out to all; each subscriber filters by route


def test_trace_file_records_stored_and_inline_operations(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    engine = Engine(StashConfig(store_url=f"file://{tmp_path / 's'}", threshold=100), trace_file=str(trace))
    engine.deserialize(engine.serialize(b"b" * 1000, COORD), COORD)
    engine.deserialize(engine.serialize(7, COORD), COORD)
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [(d["op"], d["route"]) for d in lines] == [("push", "stored"), ("pull", "stored"), ("push", "inline"), ("pull", "inline")]
    assert lines[0]["extra"]["raw_bytes"] == 1000 and lines[1]["extra"]["source"] == "store"
