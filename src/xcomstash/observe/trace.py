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

log = logging.getLogger("xcomstash")


@dataclass(frozen=True)
class TraceEvent:
    op: str  # push | pull | purge
    route: str  # inline | stored
    xcom: dict[str, Any]
    summary: str = ""
    codec: str = ""
    stored_bytes: int = 0
    seconds: float = 0.0
    uri: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def emit(event: TraceEvent, trace_file: str | None) -> None:
    if event.route == "stored":
        log.info(
            "xcomstash %s %s: %s, %s bytes in %.3fs at %s",
            event.op, event.xcom.get("key"), event.summary, f"{event.stored_bytes:,}",
            event.seconds, event.uri,
        )
    if trace_file:
        line = json.dumps(asdict(event), default=str) + "\n"
        fd = os.open(trace_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
