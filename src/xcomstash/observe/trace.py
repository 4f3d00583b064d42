"""One structured record per push, pull and purge: logged, and optionally appended to a file.

The file (``[xcomstash] trace_file``) is JSON lines, one object per operation, so a demo, a
benchmark or an operator can see where each value went and what it cost.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from xcomstash.observe.events import OK, STORED, Event

log = logging.getLogger("xcomstash")


@dataclass(frozen=True)
class TraceEvent:
    op: str  # push | pull | purge
    route: str  # inline | stored | link
    xcom: dict[str, Any]
    summary: str = ""
    codec: str = ""
    stored_bytes: int = 0
    seconds: float = 0.0
    uri: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def describe(summary: str, stored_bytes: int, seconds: float) -> str:
    """What a stored value's log line says about it: what it is, its size, the time taken."""
    return f"{summary}, {stored_bytes:,} bytes in {seconds:.3f}s"


def emit(event: TraceEvent, trace_file: str | None, log_line: bool = True) -> None:
    if event.route == "stored" and log_line:
        log.info(
            "xcomstash %s %s: %s at %s", event.op, event.xcom.get("key"),
            describe(event.summary, event.stored_bytes, event.seconds), event.uri,
        )
    if trace_file:
        line = json.dumps(asdict(event), default=str) + "\n"
        fd = os.open(trace_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


class TraceRecorder:
    """Subscribes the trace (log line, and the trace file if one is set) to the engine's events.

    Successful operations only: failures are the audit log's and the exception's business."""

    def __init__(self, trace_file: str | None, *, log_lines: bool = True) -> None:
        self.trace_file = trace_file
        #: False when the audit log's line already says it (one log line per operation:
        #: see :class:`xcomstash.observe.audit.LoggingSink`).
        self.log_lines = log_lines
        #: Inline values are traced only into a file (the log line is for stored values).
        self.wants_inline = bool(trace_file)

    def __call__(self, event: Event) -> None:
        if event.outcome != OK or (event.route != STORED and not self.trace_file):
            return
        if not self.trace_file and not self.log_lines:
            return
        emit(
            TraceEvent(
                op=event.op,
                route=event.route,
                xcom=event.xcom_dict(),
                summary=event.summary,
                codec=event.codec,
                stored_bytes=event.size or 0,
                seconds=round(event.seconds, 6),
                uri=event.uri,
                extra=_with_source(event),
            ),
            self.trace_file,
            self.log_lines,
        )

    def flush(self) -> None:
        pass


def _with_source(event: Event) -> dict:
    """The event's extra fields, plus where a pull's bytes came from and what failed first."""
    extra = dict(event.extra)
    if event.source:
        extra["source"] = event.source
    if event.failover:
        extra["failover"] = list(event.failover)
    return extra
