"""A subscriber that keeps every event, for tests that check what a push or pull observed."""

from __future__ import annotations

from xcomstash.observe.events import Event


class Collector:
    """A subscriber keeping every event (what an audit log or metrics exporter receives)."""

    wants_inline = False

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def flush(self) -> None:
        pass
