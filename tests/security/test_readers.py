from __future__ import annotations

import pytest

from xcomstash.security.readers import Actor, Expected, Readers, Restricted, readers_for
from xcomstash.coordinate import XComCoordinate
from xcomstash.errors import AccessDeniedError, InvalidReferenceError, ReferenceSignatureError

PRODUCER = XComCoordinate("team_a", "r1", "extract", -1, "return_value")


def test_restricted_to_tasks_admits_only_those_tasks_of_the_dag() -> None:
    value, readers = readers_for(Restricted({"x": 1}, tasks=["load", "load"]), PRODUCER, "any")
    assert value == {"x": 1} and readers == Readers("team_a", ("load",))
    readers.check(Actor("team_a", "r9", "load"), "XCom x")
    with pytest.raises(AccessDeniedError, match="task 'report' of DAG 'team_a' is not allowed"):
        readers.check(Actor("team_a", "r1", "report"), "XCom x")
    with pytest.raises(AccessDeniedError, match="DAG 'team_b'"):
        readers.check(Actor("team_b", "r1", "load"), "XCom x")
    with pytest.raises(AccessDeniedError, match="not running inside a task"):
        readers.check(None, "XCom x")


def test_dag_scope_by_wrapper_or_default() -> None:
    _, readers = readers_for(Restricted(1), PRODUCER, "any")
    assert readers == Readers("team_a", None)
    readers.check(Actor("team_a", "r", "anything"), "x")
    with pytest.raises(AccessDeniedError):
        readers.check(Actor("team_b", "r", "anything"), "x")
    assert readers_for(1, PRODUCER, "dag") == (1, Readers("team_a"))
    assert readers_for(1, PRODUCER, "any") == (1, None)


def test_restricted_repr_hides_the_value() -> None:
    text = repr(Restricted({"password": "hunter2hunter2"}, tasks=["t"]))
    assert "hunter2" not in text and "dict" in text
    with pytest.raises(TypeError):
        Restricted(1, tasks=[""])


def test_readers_json_round_trip_and_validation() -> None:
    for readers in (Readers("d"), Readers("d", ("a", "b"))):
        assert Readers.from_json(readers.to_json()) == readers
    for bad in (None, [], {"dag_id": 1}, {"dag_id": "d", "tasks": "a"}, {"dag_id": "d", "tasks": [1]}, {"dag_id": "d", "x": 1}):
        with pytest.raises(InvalidReferenceError):
            Readers.from_json(bad)


def test_expected_catches_a_reference_copied_into_another_row() -> None:
    Expected("team_a", "r1", "extract", -1, "return_value").check(PRODUCER, "ref")
    Expected("team_a", None, None, None, None).check(PRODUCER, "ref")
    Expected().check(None, "ref")
    with pytest.raises(ReferenceSignatureError, match="dag_id='team_a'.*dag_id='team_b'"):
        Expected(dag_id="team_b").check(PRODUCER, "ref")
    with pytest.raises(ReferenceSignatureError, match="key"):
        Expected(key="other").check(PRODUCER, "ref")
