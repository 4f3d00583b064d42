"""The one push path: every value an Airflow task returns or pushes goes through these stages.

admit  -> the guard: DAG rules, readers (``Restricted``, ``read_scope``)
route  -> inline in the xcom row, or stored (by size, ``exclusive``, readers); in exclusive
          mode an operator extra link stays in the row (:mod:`xcomstash.pipeline.links`)
encode -> the codec the registry picks for the type (JSON for the rest), [sensitive-data scan]
frame, place, publish -> :mod:`xcomstash.pipeline.place` ([encrypted], [deduplicated])
reference -> the reference for the row, [readers], [signed]
observe -> one :class:`~xcomstash.observe.events.Event`, whatever the outcome

Stages that are switched off are no-op objects (an open guard, an observer without
subscribers), never a second path.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from xcomstash.codecs import CodecRegistry
from xcomstash.codecs.base import Codec, short_type_name
from xcomstash.codecs.json import JsonCodec, StructureConverter, json_summary
from xcomstash.config import StashConfig
from xcomstash.coordinate import XComCoordinate
from xcomstash.errors import StoreError, UnsupportedTypeError, XComStashError
from xcomstash.observe.events import INLINE, LINK, OK, Event, Observer, outcome_of
from xcomstash.pipeline import links, route
from xcomstash.pipeline.deadline import within
from xcomstash.pipeline.place import Placer
from xcomstash.security.guard import Admission, Guard
from xcomstash.security.readers import Restricted

#: Codecs whose values are scanned as tables (sampled string columns) or as raw bytes.
_TABLE_CODECS = ("pandas.arrow-ipc", "polars.arrow-ipc", "arrow.ipc")
_BYTES_CODECS = ("bytes",)


class PushPath:
    def __init__(
        self,
        config: StashConfig,
        registry: CodecRegistry,
        converter: StructureConverter,
        guard: Guard,
        placer: Placer,
        observer: Observer,
    ) -> None:
        self.config = config
        self.registry = registry
        self.converter = converter
        self.json_codec = JsonCodec(converter)
        self.guard = guard
        self.placer = placer
        self.observer = observer

    def push(self, value: Any, coordinate: XComCoordinate) -> Any:
        """What goes into the xcom row: the value's JSON structure (inline) or a reference."""
        started = time.perf_counter()
        try:
            try:
                stored, event = self._push(value, coordinate)
            except OSError as exc:  # raw I/O a store did not translate: still typed, still audited
                raise StoreError(f"cannot push {coordinate} to {self.placer.store.root_uri}: {exc}") from exc
        except XComStashError as exc:
            if isinstance(exc, StoreError):
                exc.add_note(f"xcomstash: while pushing {coordinate} to {self.placer.store.root_uri}")
            self.observer.emit(Event("push", outcome_of(exc), coordinate, error=exc))
            raise
        if event is not None:
            self.observer.emit(dataclasses.replace(event, seconds=time.perf_counter() - started))
        elif self.observer.wants_inline:
            self.observer.emit(inline_event("push", value, stored, coordinate, started, self.registry, self.json_codec))
        elif self.observer.counts_inline:
            self.observer.count_inline("push", coordinate)
        return stored

    def _push(self, value: Any, coordinate: XComCoordinate) -> tuple[Any, Event | None]:
        """The stored form and, for a stored value or a link row, its event (None: the value
        went inline)."""
        # In exclusive mode an operator extra link stays in the row, unless its producer wrapped
        # it in Restricted (a read_scope rule cannot protect a link: Airflow itself writes each
        # operator link's URL into its row, in plain, when the task finishes).
        link = self.config.exclusive and links.is_link_key(coordinate.key) and not isinstance(value, Restricted)
        admission = self.guard.admit(value, coordinate)
        if link:
            return self._link_row(admission, coordinate)
        value, rules = admission.value, admission.rules
        # A value with restricted readers is always offloaded: an inline row has no readers.
        exclusive = self.config.exclusive or admission.readers is not None
        threshold = self.config.threshold
        what = f"value of XCom {coordinate}" if admission.screens else ""
        codec = self.registry.for_value(value)
        if rules.allowed_types is not None:
            rules.check_type(short_type_name(value), codec.name if codec else JsonCodec.name, codec is None)
        if codec is None:
            if not exclusive and not admission.screens and route.inline_as_is(value, threshold, self.converter.reserved_keys):
                return value, None
            structure = self.guard.screen_structure(rules, self._to_structure(value), what)
            body = self.json_codec.dumps(structure)
            rules.check_size(len(body))
            if not exclusive and len(body) < threshold and not route.collides_with_marker(structure):
                return structure, None
            return self._store(admission, coordinate, self.json_codec, value, json_summary(value), lambda s: s.write(body))
        kind = "table" if codec.name in _TABLE_CODECS else "bytes" if codec.name in _BYTES_CODECS else ""
        value = self.guard.screen_value(rules, value, kind, what)
        if codec.inline_when_small and not exclusive and codec.size_at_least(value) < threshold:
            if route.route_by_size(codec.estimate_size(value), threshold=threshold, exclusive=False).inline:
                structure = self._inline_structure(value)
                if structure is not None:
                    if rules.max_value_bytes:
                        rules.check_size(len(self.json_codec.dumps(structure)))
                    return structure, None
        return self._store(admission, coordinate, codec, value, codec.summary(value), lambda s: codec.encode(value, s))

    def _store(
        self, admission: Admission, coordinate: XComCoordinate, codec: Codec, value: Any, summary: str, write_body: Any
    ) -> tuple[dict[str, Any], Event]:
        rules = admission.rules
        check_size = rules.check_size if rules.max_value_bytes else None
        placed = within(
            self.config.push_timeout,
            lambda: self.placer.place(coordinate, codec, value, summary, write_body, check_size),
            lambda: f"the push of {coordinate} to {self.placer.store.root_uri}",
        )
        ref = placed.reference
        doc = self.guard.seal_reference(ref.to_json(), admission.readers, coordinate.dag_id)
        event = Event(
            "push", OK, coordinate, uri=ref.uri, size=ref.size, digest=ref.digest, codec=ref.codec,
            summary=ref.summary, key_id=str(doc.get("mac", "")).partition(":")[0],
            extra={"raw_bytes": placed.raw_bytes}, raw_size=placed.raw_bytes, crypto_seconds=placed.crypto_seconds,
            failover=placed.missed,
        )
        return doc, event

    def _link_row(self, admission: Admission, coordinate: XComCoordinate) -> tuple[Any, Event]:
        """An operator extra link in exclusive mode: the plain JSON value itself goes into the
        row (Airflow's API server reads it there), after the same rules as any JSON value;
        anything but a link-shaped value is refused. Observed on its own route."""
        value, rules = admission.value, admission.rules
        what = f"value of XCom {coordinate}"
        links.link_value(value, what)
        if rules.allowed_types is not None:
            rules.check_type(short_type_name(value), JsonCodec.name, True)
        structure = self.guard.screen_structure(rules, value, what)
        if structure is not value:  # masked: check the shape of what goes into the row
            links.link_value(structure, what)
        body = self.json_codec.dumps(structure)
        rules.check_size(len(body))
        event = Event(
            "push", OK, coordinate, route=LINK, codec=JsonCodec.name, summary=json_summary(value), size=len(body)
        )
        return structure, event

    def _inline_structure(self, value: Any) -> Any:
        try:
            return self.converter.to_structure(value)
        except TypeError:
            return None  # the converter cannot inline this type: store it instead

    def _to_structure(self, value: Any) -> Any:
        try:
            return self.converter.to_structure(value)
        except TypeError as exc:
            raise UnsupportedTypeError(short_type_name(value), str(exc)) from None


def inline_event(
    op: str, value: Any, stored: Any, xcom: Any, started: float, registry: CodecRegistry, json_codec: JsonCodec
) -> Event:
    """The event of a value kept inline in the xcom row (built only for subscribers that want
    inline events: it costs a summary and a JSON encoding)."""
    codec = registry.for_value(value)
    return Event(
        op, OK, xcom, route=INLINE, summary=codec.summary(value) if codec else json_summary(value),
        size=len(json_codec.dumps(stored)), seconds=time.perf_counter() - started,
    )
