"""Retention policies: which DAG runs' XComs to drop, per DAG id pattern.

Configured in ``[xcomstash] retention_policies`` as a JSON list; the first policy whose
``dag_id`` glob matches a DAG applies to it::

    [{"dag_id": "etl_*", "max_age": "30d", "keep_last_runs": 10, "max_bytes": "50GiB"},
     {"dag_id": "*", "max_age": "90d"}]

A run's XComs are dropped when the run is older than ``max_age`` (by its ``run_after``), when
it is not among the newest ``keep_last_runs`` runs of its DAG, or when the DAG's stored bytes,
counted from its newest run backwards, exceed ``max_bytes`` at or before that run. Runs that
are still queued or running are never touched. This module only decides; the command deletes
rows (through Airflow's models) and then their objects.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from typing import Any, Iterable

from xcomstash.errors import ConfigError
from xcomstash.maintenance.report import parse_duration, parse_size

ACTIVE_STATES = frozenset({"queued", "running"})


@dataclass(frozen=True)
class RetentionPolicy:
    dag_pattern: str
    max_age_seconds: float | None = None
    keep_last_runs: int | None = None
    max_bytes: int | None = None

    def matches(self, dag_id: str) -> bool:
        return fnmatch.fnmatchcase(dag_id, self.dag_pattern)

    def describe(self) -> str:
        parts = []
        if self.max_age_seconds is not None:
            parts.append(f"max_age={self.max_age_seconds:g}s")
        if self.keep_last_runs is not None:
            parts.append(f"keep_last_runs={self.keep_last_runs}")
        if self.max_bytes is not None:
            parts.append(f"max_bytes={self.max_bytes}")
        return f"{self.dag_pattern}: " + ", ".join(parts)


_KEYS = {"dag_id", "max_age", "keep_last_runs", "max_bytes"}


def parse_policies(text: str | None) -> list[RetentionPolicy]:
    """Policies from the JSON of ``[xcomstash] retention_policies`` (empty: none)."""
    if not text or not text.strip():
        return []
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"[xcomstash] retention_policies is not valid JSON: {exc}") from None
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list):
        raise ConfigError("[xcomstash] retention_policies must be a JSON list of objects")
    policies = []
    for i, item in enumerate(doc):
        if not isinstance(item, dict) or not isinstance(item.get("dag_id"), str):
            raise ConfigError(f"retention policy #{i + 1} needs a \"dag_id\" glob: {item!r:.200}")
        unknown = set(item) - _KEYS
        if unknown:
            raise ConfigError(f"retention policy #{i + 1} has unknown fields {sorted(unknown)} (known: {sorted(_KEYS)})")
        keep = item.get("keep_last_runs")
        if keep is not None and (not isinstance(keep, int) or isinstance(keep, bool) or keep < 0):
            raise ConfigError(f"retention policy #{i + 1}: keep_last_runs must be a non-negative integer")
        policy = RetentionPolicy(
            dag_pattern=item["dag_id"],
            max_age_seconds=parse_duration(item["max_age"]) if item.get("max_age") is not None else None,
            keep_last_runs=keep,
            max_bytes=parse_size(item["max_bytes"]) if item.get("max_bytes") is not None else None,
        )
        if policy.max_age_seconds is None and policy.keep_last_runs is None and policy.max_bytes is None:
            raise ConfigError(f"retention policy #{i + 1} ({item['dag_id']}) sets no limit")
        policies.append(policy)
    return policies


def policy_for(dag_id: str, policies: Iterable[RetentionPolicy]) -> RetentionPolicy | None:
    return next((p for p in policies if p.matches(dag_id)), None)


@dataclass
class RunUsage:
    dag_id: str
    run_id: str
    run_after: float  # POSIX seconds
    state: str | None
    stored_bytes: int = 0
    rows: int = 0


@dataclass(frozen=True)
class Prune:
    run: RunUsage
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "dag_id": self.run.dag_id,
            "run_id": self.run.run_id,
            "rows": self.run.rows,
            "stored_bytes": self.run.stored_bytes,
            "reasons": list(self.reasons),
        }


def plan(runs: Iterable[RunUsage], policies: list[RetentionPolicy], now: float) -> list[Prune]:
    """The runs whose XComs the policies drop, with the reasons, oldest runs of a DAG last."""
    by_dag: dict[str, list[RunUsage]] = {}
    for run in runs:
        by_dag.setdefault(run.dag_id, []).append(run)
    out: list[Prune] = []
    for dag_id in sorted(by_dag):
        policy = policy_for(dag_id, policies)
        if policy is None:
            continue
        newest_first = sorted(by_dag[dag_id], key=lambda r: (r.run_after, r.run_id), reverse=True)
        total = 0
        for index, run in enumerate(newest_first):
            total += run.stored_bytes
            reasons = []
            if policy.keep_last_runs is not None and index >= policy.keep_last_runs:
                reasons.append(f"not among the last {policy.keep_last_runs} runs")
            if policy.max_age_seconds is not None and run.run_after < now - policy.max_age_seconds:
                reasons.append(f"older than {policy.max_age_seconds:g}s")
            if policy.max_bytes is not None and total > policy.max_bytes:
                reasons.append(f"DAG over {policy.max_bytes:,} stored bytes")
            if reasons and (run.state or "").lower() not in ACTIVE_STATES:
                out.append(Prune(run, tuple(reasons)))
    return out
