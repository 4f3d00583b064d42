"""Metrics: what each operation's event says, as counters, gauges and timers.

:func:`metrics_of` turns one :class:`~xcomstash.observe.events.Event` into the metrics it
stands for; :class:`MetricsRecorder` subscribes that to the engine's observer and hands every
metric to a *sink*, a plain callable. The sink decides where metrics go (the Airflow adapter's
sends them through Airflow's own ``Stats``, so statsd, Datadog and OpenTelemetry work as the
deployment configured them); nothing here knows about Airflow.

Names carry everything a plain statsd server needs (it drops tags): the operation, the route,
the error type. Tags add the DAG and task of the XCom the operation was about, the way Airflow
tags its own task metrics (``dag_id``, ``task_id``); a tag-aware backend (OpenTelemetry,
Datadog, statsd with InfluxDB tags) can break every metric down by them. Run ids, map indexes
and keys are never tags: one series per run would swamp any metrics backend.

Values kept inline in the xcom row are counted without building their events (the small-value
path must stay cheap): :meth:`MetricsRecorder.count_inline` bumps an in-process counter,
sent with the next stored value's metrics, at least every :data:`INLINE_FLUSH_SECONDS` while
values keep being counted, and when the process ends.
"""

from __future__ import annotations

import atexit
import itertools
import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from xcomstash.coordinate import XComCoordinate
from xcomstash.errors import IntegrityError
from xcomstash.observe.events import DENIED, FAILED, INLINE, OK, REJECTED, Event

PREFIX = "xcomstash"
COUNTER, GAUGE, TIMER = "counter", "gauge", "timer"

_monotonic = time.monotonic

#: Inline counts are sent at least this often while values keep going by.
INLINE_FLUSH_SECONDS = 1.0


@dataclass(frozen=True)
class Metric:
    """One measurement: a counter increment, a gauge value or a timer reading (milliseconds,
    the unit statsd timers and Airflow's own ``Stats.timing`` use)."""

    kind: str  # counter | gauge | timer
    name: str
    value: float
    tags: tuple[tuple[str, str], ...] = ()

    def tag_dict(self) -> dict[str, str]:
        return dict(self.tags)


#: Every metric this module can produce: name (``<type>`` stands for an error class name),
#: type, and meaning. The metrics table of docs/ui-and-metrics.md is this list; a test keeps them in step.
CATALOGUE: tuple[tuple[str, str, str], ...] = (
    ("xcomstash.push.offloaded", COUNTER, "values pushed to the store (a reference went into the xcom row)"),
    ("xcomstash.push.inline", COUNTER, "values pushed inline into the xcom row"),
    ("xcomstash.pull.offloaded", COUNTER, "stored values pulled"),
    ("xcomstash.pull.inline", COUNTER, "inline values pulled"),
    ("xcomstash.push.duration", TIMER, "milliseconds one push of a stored value took, from the value to the signed reference"),
    ("xcomstash.pull.duration", TIMER, "milliseconds one pull of a stored value took, from the reference to the value"),
    ("xcomstash.push.bytes", COUNTER, "uncompressed payload bytes of the values pushed to the store"),
    ("xcomstash.push.stored_bytes", COUNTER, "bytes written to the store for them (objects: header, compressed and encrypted frames, trailer)"),
    ("xcomstash.pull.bytes", COUNTER, "bytes pulls fetched from their source (less than the object for a partial table read)"),
    ("xcomstash.push.compression_ratio", GAUGE, "uncompressed payload bytes / stored bytes of the last value pushed"),
    ("xcomstash.cache.hit", COUNTER, "pulls the local read cache served"),
    ("xcomstash.cache.miss", COUNTER, "pulls that consulted the read cache and were served from behind it"),
    ("xcomstash.push.encryption", TIMER, "milliseconds spent encrypting one pushed value (summed over frame threads)"),
    ("xcomstash.pull.decryption", TIMER, "milliseconds spent decrypting one pulled value (summed over frame threads)"),
    ("xcomstash.pull.failover", COUNTER, "sources a pull passed over (damaged, missing or unreachable) before another served"),
    ("xcomstash.push.failover", COUNTER, "locations of a replicated store that failed while the push still reached its write quorum"),
    ("xcomstash.integrity_failure", COUNTER, "sources whose bytes failed verification against the reference (size, digest, frames, decryption)"),
    ("xcomstash.push.denied", COUNTER, "pushes refused by access control"),
    ("xcomstash.push.rejected", COUNTER, "pushes refused by a value rule (type, size, sensitive data)"),
    ("xcomstash.push.failed", COUNTER, "pushes that failed (store or encoding error)"),
    ("xcomstash.pull.denied", COUNTER, "pulls refused: reader not allowed, bad signature, plain row in exclusive mode"),
    ("xcomstash.pull.failed", COUNTER, "pulls that failed (no intact copy, store error, decode error)"),
    ("xcomstash.error.<type>", COUNTER, "errors by class (StoreReadError, ObjectMissingError, IntegrityError, StoreTimeoutError, ...): each source passed over and each failed push, pull, purge or repair"),
    ("xcomstash.purge.objects", COUNTER, "stored values purged (their rows cleared, or orphans reconciled)"),
    ("xcomstash.purge.denied", COUNTER, "purges refused: the reference did not belong to the row it sat in"),
    ("xcomstash.purge.failed", COUNTER, "purges that failed (store error)"),
    ("xcomstash.repair.objects", COUNTER, "stored values copied back to replicas that lacked them or held a damaged copy"),
    ("xcomstash.repair.denied", COUNTER, "repairs refused: the reference did not belong to the row it sat in"),
    ("xcomstash.repair.failed", COUNTER, "repairs that failed (no intact copy left, store error)"),
)

_OUTCOME_NAMES = {DENIED: "denied", REJECTED: "rejected", FAILED: "failed"}


def _integrity_error_names() -> frozenset[str]:
    """Class names of :class:`IntegrityError` and its subclasses (failover entries name the
    error class as text)."""
    names, todo = set(), [IntegrityError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(names)


_INTEGRITY = _integrity_error_names()


def tags_of(xcom: XComCoordinate | dict[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """``dag_id`` and ``task_id`` of the XCom, those that are known."""
    if isinstance(xcom, XComCoordinate):
        return (("dag_id", xcom.dag_id), ("task_id", xcom.task_id))
    if not xcom:
        return ()
    return tuple((name, str(xcom[name])) for name in ("dag_id", "task_id") if xcom.get(name))


def error_types(event: Event) -> list[str]:
    """The class name of every error the operation met, in order: each source passed over
    (its failover entry), then the error it failed with unless that was the last source's."""
    types = [entry.rpartition(": ")[2] for entry in event.failover]
    if event.error is not None and event.outcome == FAILED:
        name = type(event.error).__name__
        if not (types and types[-1] == name):
            types.append(name)
    return types


def metrics_of(event: Event) -> list[Metric]:
    """The metrics one event stands for (see :data:`CATALOGUE`)."""
    tags = tags_of(event.xcom)
    out: list[Metric] = []

    def add(kind: str, name: str, value: float) -> None:
        out.append(Metric(kind, f"{PREFIX}.{name}", value, tags))

    op = event.op
    if event.outcome == OK:
        if event.route == INLINE:
            if op in ("push", "pull"):
                add(COUNTER, f"{op}.inline", 1)
            return out
        if op == "push":
            add(COUNTER, "push.offloaded", 1)
            add(TIMER, "push.duration", event.seconds * 1000.0)
            if event.raw_size is not None:
                add(COUNTER, "push.bytes", event.raw_size)
            if event.size is not None:
                add(COUNTER, "push.stored_bytes", event.size)
                if event.raw_size is not None and event.size > 0:
                    add(GAUGE, "push.compression_ratio", round(event.raw_size / event.size, 4))
            if event.crypto_seconds:
                add(TIMER, "push.encryption", event.crypto_seconds * 1000.0)
        elif op == "pull":
            add(COUNTER, "pull.offloaded", 1)
            add(TIMER, "pull.duration", event.seconds * 1000.0)
            fetched = event.fetched if event.fetched is not None else event.size
            if fetched is not None:
                add(COUNTER, "pull.bytes", fetched)
        elif op in ("purge", "repair"):
            add(COUNTER, f"{op}.objects", 1)
    elif event.outcome in _OUTCOME_NAMES:
        add(COUNTER, f"{op}.{_OUTCOME_NAMES[event.outcome]}", 1)
    if op == "pull":
        if event.cache:
            add(COUNTER, f"cache.{event.cache}", 1)
        if event.crypto_seconds:
            add(TIMER, "pull.decryption", event.crypto_seconds * 1000.0)
    if op in ("push", "pull"):
        # A failed pull's last entry is the source it failed on, not one it moved on from.
        passed_over = len(event.failover) - (0 if event.outcome == OK or op == "push" else 1)
        if passed_over > 0:
            add(COUNTER, f"{op}.failover", passed_over)
    types = error_types(event)
    integrity = sum(1 for name in types if name in _INTEGRITY)
    if integrity:
        add(COUNTER, "integrity_failure", integrity)
    counted: dict[str, int] = {}
    for name in types:
        counted[name] = counted.get(name, 0) + 1
    for name, count in counted.items():
        add(COUNTER, f"error.{name}", count)
    return out


Sink = Callable[[Metric], None]


class MetricsRecorder:
    """Subscribes metrics to the engine's events and hands each to ``sink``.

    Inline values are counted in process (see the module docstring) and sent as one counter
    per (operation, DAG, task) when :meth:`flush` runs: at most every ``flush_seconds``
    while counting, before each stored value's metrics, and at exit.

    Counting takes no lock: each (operation, DAG, task) has an ``itertools.count`` whose
    ``next`` is atomic, and a flush sends how far each has moved since the last one (its own
    ``next`` included), so a value counted while a flush runs is sent by the next flush."""

    #: Inline events are not needed: :meth:`count_inline` counts those values for less.
    wants_inline = False

    def __init__(self, sink: Sink, *, flush_seconds: float = INLINE_FLUSH_SECONDS) -> None:
        self.sink = sink
        self.flush_seconds = flush_seconds
        self._forget_after_fork()
        _track(self)

    def __call__(self, event: Event) -> None:
        if self._pending:
            self.flush()
        self._send(metrics_of(event))

    def count_inline(self, op: str, xcom: XComCoordinate | dict[str, Any] | None) -> None:
        # Keyed by what the tags are made of: tags are built once per flush, not per value.
        if type(xcom) is XComCoordinate:
            key = (op, xcom.dag_id, xcom.task_id)
        elif xcom:
            key = (op, xcom.get("dag_id"), xcom.get("task_id"))
        else:
            key = (op, None, None)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters.setdefault(key, itertools.count())
        next(counter)
        self._pending = True
        if _monotonic() >= self._next_flush:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            self._pending = False
            self._next_flush = _monotonic() + self.flush_seconds
            out = []
            for key, counter in list(self._counters.items()):
                reached = next(counter)
                counted = reached - self._sent.get(key, 0)
                self._sent[key] = reached + 1
                if counted:
                    op, dag_id, task_id = key
                    tags = tags_of({"dag_id": dag_id, "task_id": task_id})
                    out.append(Metric(COUNTER, f"{PREFIX}.{op}.inline", counted, tags))
        self._send(out)

    def _send(self, metrics: Iterable[Metric]) -> None:
        for metric in metrics:
            self.sink(metric)

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception:  # at exit: the metrics backend may already be gone
            pass

    def _forget_after_fork(self) -> None:
        """Start counting afresh (also in a forked child: the parent's unsent counts are the
        parent's to send)."""
        #: (op, dag_id, task_id) -> count of inline values (plus one per flush), and where
        #: the last flush left it.
        self._counters: dict[tuple[str, Any, Any], itertools.count[int]] = {}
        self._sent: dict[tuple[str, Any, Any], int] = {}
        self._pending = False
        self._lock = threading.Lock()
        self._next_flush = _monotonic() + self.flush_seconds


#: Live recorders, flushed at exit and reset in forked children (held weakly: an engine
#: that is dropped takes its recorder with it).
_RECORDERS: weakref.WeakSet[MetricsRecorder] = weakref.WeakSet()
#: The process that registered :func:`_flush_all` at exit (Airflow's task supervisor clears
#: the exit handlers a forked task process inherits, so each process registers its own).
_atexit_pid: int | None = None


def _track(recorder: MetricsRecorder) -> None:
    global _atexit_pid
    _RECORDERS.add(recorder)
    if _atexit_pid != os.getpid():
        atexit.register(_flush_all)
        _atexit_pid = os.getpid()


def _flush_all() -> None:
    for recorder in list(_RECORDERS):
        recorder._flush_quietly()


def _after_fork_in_child() -> None:
    for recorder in list(_RECORDERS):
        recorder._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
