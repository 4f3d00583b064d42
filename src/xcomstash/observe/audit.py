"""The audit log: one structured event per push, pull, purge, access denial, policy rejection
and integrity failure, saying who did what to which XCom, when, and how it ended.

Every event goes to two sinks:

- **logging** (logger ``xcomstash.observe.audit``): inside a task this is the task log, through
  Airflow's logging; the event is also attached to the record as ``record.xcomstash_audit``;
- **the store** (durable, survives the worker): events are buffered and written as JSON-lines
  objects under ``!audit/<YYYY-MM-DD>/`` at the store root. A buffer is flushed when it holds
  ``flush_events`` events, when ``flush_seconds`` have passed since its first event, at process
  exit, and *at once* for every event that is not a plain success (denials, rejections,
  integrity failures), so the events that matter most are on storage before the task fails.
  (``!`` cannot start a percent-encoded DAG id, so the prefix never collides with values.)

Events never carry values or secrets: only coordinates, sizes, digests, key ids and error
types/messages (which name detectors and rules, never matched text).

``xcomstash audit`` (:mod:`xcomstash.commands.audit`) queries the store sink by DAG, run,
task, key, operation, outcome and time range.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator, Protocol

log = logging.getLogger("xcomstash.observe.audit")

PREFIX = "!audit"
OPS = ("push", "pull", "purge", "rewrap", "reencrypt")
OK, DENIED, REJECTED, FAILED = "ok", "denied", "rejected", "failed"
OUTCOMES = (OK, DENIED, REJECTED, FAILED)
_MAX_ERROR_CHARS = 500


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class AuditEvent:
    op: str
    outcome: str
    #: The XCom acted on: dag_id, run_id, task_id, map_index, key.
    xcom: dict[str, Any]
    #: Who acted: the task instance running this code (dag_id, run_id, task_id, map_index,
    #: try_number), when known; for a pull it may differ from ``xcom`` (cross-task, cross-DAG).
    actor: dict[str, Any] = field(default_factory=dict)
    route: str = ""  # inline | stored
    uri: str = ""
    size: int | None = None
    digest: str = ""
    key_id: str = ""
    error: str = ""  # "ErrorType: message" for outcomes other than ok
    ts: str = field(default_factory=now_iso)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v not in ("", None, {})}, default=str)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> AuditEvent:
        known = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
        known.setdefault("xcom", {})
        return cls(**known)


def describe_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


class Sink(Protocol):
    def write(self, event: AuditEvent) -> None: ...
    def flush(self) -> None: ...


class LoggingSink:
    def write(self, event: AuditEvent) -> None:
        x = event.xcom
        level = logging.INFO if event.outcome == OK else logging.WARNING
        log.log(
            level,
            "xcomstash audit: %s %s dag_id=%s run_id=%s task_id=%s map_index=%s key=%s%s%s%s",
            event.op, event.outcome, x.get("dag_id"), x.get("run_id"), x.get("task_id"),
            x.get("map_index"), x.get("key"),
            f" uri={event.uri}" if event.uri else "",
            f" key_id={event.key_id}" if event.key_id else "",
            f" error={event.error}" if event.error else "",
            extra={"xcomstash_audit": json.loads(event.to_json())},
        )

    def flush(self) -> None:
        pass


class StoreSink:
    """Buffered JSON-lines objects in a store (see the module docstring for when it flushes)."""

    def __init__(self, store: Any, *, flush_events: int = 200, flush_seconds: float = 5.0) -> None:
        self.store = store
        self.flush_events = flush_events
        self.flush_seconds = flush_seconds
        self._lines: list[str] = []
        self._first: float | None = None
        self._lock = threading.Lock()
        self._seq = 0
        atexit.register(self._flush_quietly)

    def write(self, event: AuditEvent) -> None:
        with self._lock:
            self._lines.append(event.to_json())
            if self._first is None:
                self._first = time.monotonic()
            due = (
                event.outcome != OK
                or len(self._lines) >= self.flush_events
                or time.monotonic() - self._first >= self.flush_seconds
            )
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._lines, self._first = self._lines, [], None
            self._seq += 1
            seq = self._seq
        if not lines:
            return
        stamp = datetime.now(timezone.utc)
        key = (
            f"{PREFIX}/{stamp:%Y-%m-%d}/{stamp:%H%M%S.%f}-{_safe(socket.gethostname())}-{os.getpid()}"
            f"-{seq}-{secrets.token_hex(3)}.jsonl"
        )
        data = ("\n".join(lines) + "\n").encode()
        try:
            with self.store.writer(key) as sink:
                sink.write(data)
        except Exception as exc:  # never fail a task because the audit sink is down; say so loudly
            log.error("xcomstash audit: could not write %d events to %s: %s", len(lines), key, exc)
            for line in lines:
                log.error("xcomstash audit (unsaved): %s", line)

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception:  # at interpreter exit
            pass


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:60] or "host"


class AuditLog:
    """Fans events out to its sinks; a sink failure is logged, never raised into a task."""

    def __init__(self, sinks: Iterable[Sink]) -> None:
        self.sinks = tuple(sinks)

    def record(self, event: AuditEvent) -> None:
        for sink in self.sinks:
            try:
                sink.write(event)
            except Exception as exc:
                log.error("xcomstash audit sink %s failed: %s", type(sink).__name__, exc)

    def flush(self) -> None:
        for sink in self.sinks:
            try:
                sink.flush()
            except Exception as exc:
                log.error("xcomstash audit sink %s failed to flush: %s", type(sink).__name__, exc)


class AuditRecorder:
    """Subscribes the audit log to the engine's events: who did what to which XCom, and how
    it ended. Successful inline operations are recorded only with ``audit_inline``; refusals
    and failures always are."""

    def __init__(self, audit_log: AuditLog, actor: Callable[[], Any] | None = None, *, inline: bool = False) -> None:
        self.audit_log = audit_log
        self._actor = actor
        self.wants_inline = inline

    def __call__(self, event: Any) -> None:
        if event.route == "inline" and event.outcome == OK and not self.wants_inline:
            return
        actor = _call_quietly(self._actor)
        xcom = event.xcom_dict()
        if actor is None and event.op == "push" and "task_id" in xcom:
            # Airflow pushes a task's return value after leaving the task's context; only the
            # task instance itself pushes to its coordinate (the try number is then unknown).
            actor = {k: xcom[k] for k in ("dag_id", "run_id", "task_id", "map_index")}
            actor["try_number"] = None
        self.audit_log.record(
            AuditEvent(
                op=event.op,
                outcome=event.outcome,
                xcom=xcom,
                actor=actor if isinstance(actor, dict) else (actor.as_dict() if actor is not None else {}),
                route=event.route,
                uri=event.uri,
                size=event.size,
                digest=event.digest,
                key_id=event.key_id,
                error=describe_error(event.error) if event.error is not None else "",
            )
        )

    def flush(self) -> None:
        self.audit_log.flush()


def _call_quietly(actor: Callable[[], Any] | None) -> Any:
    if actor is None:
        return None
    try:
        return actor()
    except Exception:
        return None


# ------------------------------------------------------------------- query


@dataclass(frozen=True)
class Query:
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    key: str | None = None
    op: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, event: AuditEvent) -> bool:
        x = event.xcom
        for name in ("dag_id", "run_id", "task_id", "key"):
            wanted = getattr(self, name)
            if wanted is not None and x.get(name) != wanted:
                return False
        if self.op is not None and event.op != self.op:
            return False
        if self.outcome is not None and event.outcome != self.outcome:
            return False
        if self.since is not None or self.until is not None:
            when = parse_time(event.ts)
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when > self.until:
                return False
        return True


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """ISO 8601 (``2026-11-23``, ``2026-11-23T14:00:00Z``) or relative (``30m``, ``2h``, ``7d``)."""
    text = text.strip()
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    if text[:-1].isdigit() and text[-1:] in units:
        return (now or datetime.now(timezone.utc)) - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use ISO 8601 or 30m / 2h / 7d)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _days(query: Query) -> list[str] | None:
    """Day partitions to list, or None for all (no lower bound)."""
    if query.since is None:
        return None
    end = (query.until or datetime.now(timezone.utc)).astimezone(timezone.utc).date()
    day = query.since.astimezone(timezone.utc).date()
    out = []
    while day <= end and len(out) <= 3660:
        out.append(day.isoformat())
        day += timedelta(days=1)
    return out


def read_events(store: Any, query: Query = Query()) -> Iterator[AuditEvent]:
    """Events in the store matching ``query``, oldest first (by object name, then line)."""
    days = _days(query)
    prefixes = [f"{PREFIX}/{d}" for d in days] if days is not None else [PREFIX]
    keys: list[str] = []
    for prefix in prefixes:
        keys.extend(info.key for info in store.list(prefix) if info.key.endswith(".jsonl"))
    for key in sorted(keys):
        try:
            text = store.get(key).decode("utf-8", "replace")
        except Exception as exc:  # e.g. deleted between list and get
            log.warning("xcomstash audit: cannot read %s: %s", key, exc)
            continue
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                event = AuditEvent.from_dict(json.loads(line))
            except (ValueError, TypeError):
                log.warning("xcomstash audit: skipping a malformed line in %s", key)
                continue
            if query.matches(event):
                yield event
