"""Retention decisions (engine side): which runs each policy drops, on a fixture of many runs."""

from __future__ import annotations

import pytest

from xcomstash.errors import ConfigError
from xcomstash.maintenance.retention import RunUsage, parse_policies, plan

NOW = 1_800_000_000.0
DAY = 86400.0


def runs(dag: str, n: int, size: int = 100, state: str = "success") -> list[RunUsage]:
    """Run i is i days old (run 0 is the newest)."""
    return [RunUsage(dag, f"r{i}", NOW - i * DAY, state, stored_bytes=size, rows=1) for i in range(n)]


def dropped(policies: str, fixture: list[RunUsage]) -> list[tuple[str, str]]:
    return sorted((p.run.dag_id, p.run.run_id) for p in plan(fixture, parse_policies(policies), NOW))


def test_max_age() -> None:
    assert dropped('[{"dag_id": "a", "max_age": "3.5d"}]', runs("a", 6)) == [("a", "r4"), ("a", "r5")]


def test_keep_last_runs() -> None:
    assert dropped('[{"dag_id": "a", "keep_last_runs": 4}]', runs("a", 6)) == [("a", "r4"), ("a", "r5")]
    assert dropped('[{"dag_id": "a", "keep_last_runs": 0}]', runs("a", 2)) == [("a", "r0"), ("a", "r1")]


def test_max_bytes_counts_newest_first() -> None:
    assert dropped('[{"dag_id": "a", "max_bytes": 250}]', runs("a", 5)) == [("a", "r2"), ("a", "r3"), ("a", "r4")]
    assert dropped('[{"dag_id": "a", "max_bytes": "1KiB"}]', runs("a", 5)) == []


def test_first_matching_pattern_wins_and_other_dags_are_untouched() -> None:
    fixture = runs("etl_a", 5) + runs("etl_b", 5) + runs("report", 5)
    policies = '[{"dag_id": "etl_a", "keep_last_runs": 1}, {"dag_id": "etl_*", "keep_last_runs": 3}]'
    assert dropped(policies, fixture) == [("etl_a", f"r{i}") for i in range(1, 5)] + [("etl_b", "r3"), ("etl_b", "r4")]


def test_running_runs_are_never_dropped() -> None:
    fixture = runs("a", 3) + [RunUsage("a", "old-running", NOW - 100 * DAY, "running", 10, 1)]
    assert dropped('[{"dag_id": "a", "max_age": "30d"}]', fixture) == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("not json", "not valid JSON"),
        ('[{"max_age": "1d"}]', "dag_id"),
        ('[{"dag_id": "a"}]', "sets no limit"),
        ('[{"dag_id": "a", "keep_last_runs": -1}]', "non-negative"),
        ('[{"dag_id": "a", "max_age": "soon"}]', "not a duration"),
        ('[{"dag_id": "a", "max_bytes": "lots"}]', "not a size"),
    ],
)
def test_bad_policies_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_policies(text)
