"""What each maintenance run leaves behind for the storage overview, and the overview itself.

``reconcile``, ``verify``, ``retention`` and ``stats`` each write a small JSON record of their
run (when, how it ended, the summary, the report trimmed to what a page shows) into the store
they worked on, under ``!maintenance/<command>/``. ``!`` cannot start a percent-encoded DAG id,
so the prefix never collides with values; reconcile, purge and the listings skip it like the
audit log. Only the newest :data:`KEEP` records of each command are kept.

The records live in the store (not in Airflow's database) because that is what every host
running the commands and the API server share, and they survive restarts and database
cleanups. :func:`overview` reads only these records and the newest audit objects, a bounded
amount whatever the store holds: an overview page never lists the values themselves.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from xcomstash.observe.audit import OK, PREFIX as AUDIT_PREFIX, AuditEvent

log = logging.getLogger("xcomstash.maintenance.records")

PREFIX = "!maintenance"
COMMANDS = ("reconcile", "verify", "retention", "stats")
#: Records kept per command (older ones are deleted when a new one is written).
KEEP = 20
#: Items kept of any list in a recorded report (samples, problems, runs pruned).
LIST_ITEMS = 20
#: Audit objects read for the overview (newest first), and the days looked back.
AUDIT_OBJECTS = 200
AUDIT_DAYS = 7
NOTABLE_EVENTS = 50


def record_run(
    store: Any,
    command: str,
    report: dict[str, Any],
    *,
    summary: str = "",
    exit_code: int = 0,
    now: datetime | None = None,
) -> str | None:
    """Write the record of one run of ``command``; returns its key, or None if the store
    refused it (logged: a record must never fail the command that did the work)."""
    if command not in COMMANDS:
        raise ValueError(f"unknown maintenance command {command!r}; one of {COMMANDS}")
    when = now or datetime.now(timezone.utc)
    key = f"{PREFIX}/{command}/{when:%Y%m%dT%H%M%S.%fZ}-{secrets.token_hex(3)}.json"
    doc = {
        "command": command,
        "finished": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "exit_code": exit_code,
        "summary": summary,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "report": trim(report),
    }
    try:
        with store.writer(key) as sink:
            sink.write(json.dumps(doc, default=str).encode())
        _prune(store, command)
    except Exception as exc:
        log.warning("xcomstash: could not record this %s run in the store (%s): %s", command, key, exc)
        return None
    return key


def trim(value: Any, depth: int = 0) -> Any:
    """The report with every list cut to :data:`LIST_ITEMS` items (a count is kept beside a
    cut list) and every mapping to 50 entries: a record stays a few kilobytes."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= 50:
                out["…"] = f"{len(value) - 50} more"
                break
            out[str(k)] = trim(v, depth + 1)
            if isinstance(v, list) and len(v) > LIST_ITEMS:
                out[f"{k}_total"] = len(v)
        return out
    if isinstance(value, (list, tuple)):
        return [trim(v, depth + 1) for v in list(value)[:LIST_ITEMS]]
    return value


def _keys(store: Any, command: str) -> list[str]:
    return sorted(info.key for info in store.list(f"{PREFIX}/{command}/") if info.key.endswith(".json"))


def _prune(store: Any, command: str) -> None:
    for key in _keys(store, command)[:-KEEP]:
        try:
            store.delete(key)
        except Exception as exc:  # another run pruned it first
            log.debug("xcomstash: could not delete old record %s: %s", key, exc)


def last_runs(store: Any, command: str, n: int = 2) -> list[dict[str, Any]]:
    """The newest ``n`` records of ``command``, newest first (one listing of a prefix that
    holds at most :data:`KEEP` objects, and ``n`` reads)."""
    out = []
    for key in reversed(_keys(store, command)[-n:]):
        try:
            out.append(json.loads(store.get(key)))
        except Exception as exc:  # pruned between list and get, or damaged
            log.warning("xcomstash: skipping maintenance record %s: %s", key, exc)
    return out


# --------------------------------------------------------------------------- the audit


def notable(event: AuditEvent) -> str | None:
    """Why an audit event is worth a person's look, or None: a denied or rejected operation
    (a denied pull, a refused purge), a failure (an integrity failure, a missing object), a
    pull served only after failing over from another source."""
    if event.outcome != OK:
        kind = event.error.split(":", 1)[0] if event.error else event.outcome
        return f"{event.op} {event.outcome}" + (f" ({kind})" if kind and kind != event.outcome else "")
    if event.failover:
        return f"{event.op} failed over ({'; '.join(event.failover)[:200]})"
    return None


def notable_events(
    store: Any,
    *,
    days: int = AUDIT_DAYS,
    max_objects: int = AUDIT_OBJECTS,
    limit: int = NOTABLE_EVENTS,
    visible: Callable[[str | None], bool] = lambda dag_id: True,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The newest notable audit events (see :func:`notable`), newest first, from at most
    ``max_objects`` audit objects of the last ``days`` days: the events that matter are
    flushed at once into objects of their own, so they are among the newest objects.
    ``visible(dag_id)``: whether the viewer may see events of that DAG."""
    today = (now or datetime.now(timezone.utc)).date()
    found: list[dict[str, Any]] = []
    objects = 0
    for back in range(days):
        day = today - timedelta(days=back)
        keys = sorted(
            (info.key for info in store.list(f"{AUDIT_PREFIX}/{day.isoformat()}/") if info.key.endswith(".jsonl")),
            reverse=True,
        )
        for key in keys:
            if objects >= max_objects or len(found) >= limit:
                return found[:limit]
            objects += 1
            try:
                lines = store.get(key).decode("utf-8", "replace").splitlines()
            except Exception:
                continue
            for line in reversed(lines):
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                if "op" not in doc:
                    continue  # the object's chain header
                event = AuditEvent.from_dict(doc)
                why = notable(event)
                if why is None or not visible(event.xcom.get("dag_id")):
                    continue
                found.append({
                    "ts": event.ts, "why": why, "op": event.op, "outcome": event.outcome, "xcom": event.xcom,
                    "actor": event.actor, "error": event.error[:300], "uri": event.uri[:300],
                })
    found.sort(key=lambda e: e["ts"], reverse=True)
    return found[:limit]


# ----------------------------------------------------------------------------- overview


def growth(latest: dict[str, Any] | None, previous: dict[str, Any] | None) -> dict[str, dict[str, int]]:
    """Per DAG: objects and bytes now, and their change since the previous stats run."""
    def per_dag(record: dict[str, Any] | None) -> dict[str, tuple[int, int]]:
        if record is None:
            return {}
        by_dag = record.get("report", {}).get("by_dag", {})
        return {
            dag: (int(b.get("stored_count", 0)) + int(b.get("inline_count", 0)),
                  int(b.get("stored_bytes", 0)) + int(b.get("inline_bytes", 0)))
            for dag, b in by_dag.items() if isinstance(b, dict)
        }

    now, before = per_dag(latest), per_dag(previous)
    out = {}
    for dag, (objects, size) in sorted(now.items(), key=lambda kv: -kv[1][1]):
        entry = {"objects": objects, "bytes": size}
        if previous is not None:
            old_objects, old_size = before.get(dag, (0, 0))
            entry |= {"objects_change": objects - old_objects, "bytes_change": size - old_size}
        out[dag] = entry
    return out


def overview(store: Any, *, visible: Callable[[str | None], bool] = lambda dag_id: True) -> dict[str, Any]:
    """What the storage overview page shows, from the maintenance records and the newest
    audit objects only. ``visible(dag_id)`` hides what the viewer may not see (per-DAG
    numbers, largest values and audit events of other DAGs)."""
    stats = last_runs(store, "stats", 2)
    latest = stats[0] if stats else None
    previous = stats[1] if len(stats) > 1 else None
    every = growth(latest, previous)
    dags = {dag: v for dag, v in every.items() if visible(dag)}
    hidden = len(every) - len(dags)
    largest = [
        item for item in (latest or {}).get("report", {}).get("largest", [])
        if isinstance(item, dict) and visible((item.get("xcom") or {}).get("dag_id"))
    ]
    # A run's summary counts over every DAG: shown only to who may see every DAG.
    runs: dict[str, Any] | None = None
    if not hidden and visible(None):
        runs = {}
        for command in ("reconcile", "verify", "retention"):
            last = last_runs(store, command, 1)
            runs[command] = _run_summary(last[0]) if last else None
    return {
        "hidden_dags": hidden,
        "stats": {
            "finished": latest.get("finished") if latest else None,
            "previous": previous.get("finished") if previous else None,
            "by_dag": dags,
            "largest": largest,
            "totals": _visible_totals(dags),
        },
        "runs": runs,
        "events": notable_events(store, visible=visible),
    }


def _run_summary(record: dict[str, Any]) -> dict[str, Any]:
    report = record.get("report", {})
    return {
        "finished": record.get("finished"),
        "exit_code": record.get("exit_code"),
        "summary": record.get("summary", ""),
        "dry_run": bool(report.get("dry_run")),
        "host": record.get("host"),
    }


def _visible_totals(dags: dict[str, dict[str, int]]) -> dict[str, int]:
    return {
        "objects": sum(d["objects"] for d in dags.values()),
        "bytes": sum(d["bytes"] for d in dags.values()),
        "objects_change": sum(d.get("objects_change", 0) for d in dags.values()),
        "bytes_change": sum(d.get("bytes_change", 0) for d in dags.values()),
    }


def last_verification(store: Any, uris: Iterable[str]) -> dict[str, dict[str, Any]]:
    """For each URI: the newest verify run, and whether it reported a problem with the URI
    (among the problems it recorded). Bounded: one record read."""
    last = last_runs(store, "verify", 1)
    if not last:
        return {}
    record = last[0]
    problems = {p.get("uri"): p for p in record.get("report", {}).get("problems", []) if isinstance(p, dict)}
    out = {}
    for uri in uris:
        problem = problems.get(uri)
        out[uri] = {
            "finished": record.get("finished"),
            "status": problem.get("status", "problem") if problem else "no problem reported",
            **({"detail": str(problem.get("detail", ""))[:300]} if problem else {}),
        }
    return out
