"""One event per operation (push, pull, purge), and the observer that hands it to subscribers.

The pipeline never asks "is auditing on? is tracing on?": it emits an :class:`Event` at the
end of every operation and the :class:`Observer` passes it to whatever subscribed (the audit
log, the trace file, metrics). With no subscriber the observer is a no-op, and with none that
wants inline (in-database) values the small-value path does not even build the event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

from xcomstash.coordinate import XComCoordinate
from xcomstash.errors import AccessDeniedError, PlainRowError, PolicyViolationError, ReferenceSignatureError

log = logging.getLogger("xcomstash")

OK, DENIED, REJECTED, FAILED = "ok", "denied", "rejected", "failed"
INLINE, STORED = "inline", "stored"
#: An operator extra link kept as a plain row in exclusive mode (see
#: :mod:`xcomstash.pipeline.links`): observed like a stored value, whatever ``audit_inline`` says.
LINK = "link"


@dataclass(frozen=True)
class Event:
    op: str  # push | pull | purge | preview | ...
    outcome: str  # ok | denied | rejected | failed
    #: The XCom acted on, as a coordinate, or as much of it as is known.
    xcom: XComCoordinate | dict[str, Any] | None
    route: str = STORED
    uri: str = ""
    size: int | None = None
    digest: str = ""
    #: The id of the key that signed the reference (empty: unsigned).
    key_id: str = ""
    codec: str = ""
    summary: str = ""
    seconds: float = 0.0
    #: Where a pull's bytes came from (``store``, ``cache``, ``read-ahead``).
    source: str = ""
    #: Sources tried before the one that served (or all, when none did), each as
    #: ``"<source>: <error type>"``: a replica read around, a damaged cache entry. For a
    #: push: the locations of a replicated store that failed while it reached its quorum.
    failover: tuple[str, ...] = ()
    error: BaseException | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: The XCom the row *claimed* (its reference's ``xcom``) when it differs from ``xcom``,
    #: the one asked for: a refused row is filed under the XCom asked for, never its claim.
    claimed: dict[str, Any] | None = None
    #: Uncompressed payload bytes (what the codec produced or gets back), where known.
    raw_size: int | None = None
    #: Bytes a pull fetched from its source: the object's size, or less for a partial read.
    fetched: int | None = None
    #: Whether a read cache was consulted and served (``hit``), consulted and did not
    #: (``miss``), or not consulted at all (empty).
    cache: str = ""
    #: Seconds spent sealing or opening frames (summed over the frame threads); 0 when the
    #: object is not encrypted.
    crypto_seconds: float = 0.0
    #: Who acted, when the caller knows better than the audit recorder's own actor (a
    #: preview in the Airflow UI: the signed-in user, not a task).
    actor: dict[str, Any] | None = None

    def xcom_dict(self) -> dict[str, Any]:
        x = self.xcom
        return x.as_dict() if isinstance(x, XComCoordinate) else dict(x or {})


def outcome_of(exc: BaseException) -> str:
    """The outcome an exception stands for: refused by access control, by a value rule, or failed."""
    if isinstance(exc, (AccessDeniedError, ReferenceSignatureError, PlainRowError)):
        return DENIED
    if isinstance(exc, PolicyViolationError):
        return REJECTED
    return FAILED


class Subscriber(Protocol):
    #: Whether this subscriber wants events of values kept inline in the xcom row.
    wants_inline: bool

    def __call__(self, event: Event) -> None: ...

    def flush(self) -> None: ...


class InlineCounter(Protocol):
    """A subscriber that also counts inline values without their events (metrics): where no
    subscriber wants inline events, the small-value path calls :meth:`count_inline` instead
    of building one, which costs a dictionary update rather than a summary and a JSON
    encoding. Whenever an inline event *is* built, it is emitted instead (never both)."""

    def count_inline(self, op: str, xcom: XComCoordinate | dict[str, Any] | None) -> None: ...


class Observer:
    """Fans each event out to the subscribers; a failing subscriber is logged, never raised
    into a task (an audit or metrics outage must not fail the data path)."""

    def __init__(self, subscribers: Iterable[Subscriber] = ()) -> None:
        self.subscribers = tuple(subscribers)
        self.active = bool(self.subscribers)
        self.wants_inline = any(s.wants_inline for s in self.subscribers)
        self._count_inline: tuple[Any, ...] = tuple(
            s.count_inline for s in self.subscribers if callable(getattr(s, "count_inline", None))  # type: ignore[attr-defined]
        )
        #: Whether the inline path must call :meth:`count_inline` (when it builds no event).
        self.counts_inline = bool(self._count_inline) and not self.wants_inline

    def emit(self, event: Event) -> None:
        for subscriber in self.subscribers:
            try:
                subscriber(event)
            except Exception as exc:
                log.error("xcomstash: %s failed on a %s event: %s", type(subscriber).__name__, event.op, exc)

    def count_inline(self, op: str, xcom: XComCoordinate | dict[str, Any] | None) -> None:
        """An inline value went by without an event (see :class:`InlineCounter`)."""
        for count in self._count_inline:
            try:
                count(op, xcom)
            except Exception as exc:
                log.error("xcomstash: %r failed to count an inline %s: %s", count, op, exc)

    def flush(self) -> None:
        for subscriber in self.subscribers:
            try:
                subscriber.flush()
            except Exception as exc:
                log.error("xcomstash: %s failed to flush: %s", type(subscriber).__name__, exc)
