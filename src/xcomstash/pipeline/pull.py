"""The one pull path: every read of a stored value (a task's pull, a mapped task's fan-in,
Airflow's lazy sequence, async pulls, partial table reads, purge) goes through these stages.

open reference -> parse, MAC (the guard), written for the XCom asked for, readers
locate         -> the object's key in the configured store (nothing outside it)
sources        -> read-ahead, then ``store.read_sources(key)`` (a cache, the store, replicas)
                  in order; every source is verified against the reference (size, root
                  digest, frames); on an integrity or availability error the source is told
                  (a cache drops its copy) and the next one is tried
decode         -> [decrypt] -> decompress -> codec (whole value, or a table's columns/rows)
observe        -> one :class:`~xcomstash.observe.events.Event`, whatever the outcome

A wrong value is never returned: either every check passes or a typed
:class:`~xcomstash.errors.ReadError` names the XCom and the URI.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

from xcomstash.codecs import CodecRegistry
from xcomstash.codecs.arrow import ArrowTableCodec
from xcomstash.codecs.base import Codec
from xcomstash.codecs.json import JsonCodec, json_summary
from xcomstash.config import StashConfig
from xcomstash.coordinate import XComCoordinate, hex_of, parse_link_key
from xcomstash.errors import (
    DecodeError,
    DecryptionError,
    IntegrityError,
    KeyUnavailableError,
    ObjectMissingError,
    PlainRowError,
    ReadError,
    ReferenceSignatureError,
    StoreError,
    StoreReadError,
    XComStashError,
)
from xcomstash.codecs.pandas import PandasDataFrameCodec
from xcomstash.format import container, keyspace
from xcomstash.format.frames import FrameError, read_frames
from xcomstash.format.reference import Reference, is_reference
from xcomstash.observe.events import LINK, OK, Event, Observer, outcome_of
from xcomstash.pipeline import links
from xcomstash.pipeline.deadline import Started, within
from xcomstash.pipeline.place import Placer
from xcomstash.pipeline.move import MoveResult, home_store, move_object, source_store
from xcomstash.pipeline.pools import FANIN_WORKERS, CallerFirst, Pools
from xcomstash.pipeline.repair import Repaired, RepairResult, repair_object
from xcomstash.pipeline.purge import PurgeResult, owned_key
from xcomstash.pipeline.push import inline_event
from xcomstash.pipeline.readahead import MAX_OBJECT_BYTES, MemoryReader, ReadAhead
from xcomstash.pipeline.selection import (
    FramedFile,
    PartialRead,
    read_arrow_subset,
    rows_of_range_index,
    select_in_memory,
)
from xcomstash.pipeline.head import HeadError, read_table_head
from xcomstash.preview import (
    Preview,
    PreviewLimits,
    PreviewResult,
    StoredInfo,
    array_header_preview,
    bytes_preview,
    masker_for,
    table_from_head,
    value_preview,
)
from xcomstash.security.crypto.stream import FrameCipher, KeySlot
from xcomstash.security.guard import UNSIGNED, Guard
from xcomstash.security.readers import Expected
from xcomstash.stores.base import ObjectReader, ReadSource, Store
from xcomstash.stores.caching import CACHE_SOURCE

#: Codecs whose stored tables can be read in part (string column labels, Arrow IPC file).
_PARTIAL_CODECS = (PandasDataFrameCodec.name, ArrowTableCodec.name)

#: Errors after which the next source is tried: the bytes were damaged or stale (a cache
#: copy, a prefetch that predates a retry's overwrite or a key re-wrap), or the source could
#: not serve them. Anything else (a codec error, a denied read) ends the pull.
#: The key id of a read made from the store alone (no row, so no reference to verify).
STORE_ONLY = "store-only"
_NEXT_SOURCE = (IntegrityError, KeyUnavailableError, StoreReadError, ObjectMissingError)


@dataclass
class ReadNotes:
    """What a read learnt on its way, for its event (metrics): filled by the source and
    decode stages of one pull."""

    #: ``hit``: the read cache served; ``miss``: it was consulted and did not (no entry, or
    #: a damaged one); empty: no cache in front of the store.
    cache: str = ""
    #: Seconds spent decrypting frames (summed over the frame threads).
    crypto_seconds: float = 0.0
    #: Uncompressed payload bytes of the object read.
    raw_size: int | None = None


@dataclass(frozen=True)
class Opened:
    """A reference that passed every check made before any store access."""

    ref: Reference
    key: str
    coordinate: XComCoordinate | None
    #: The DAG run an encrypted object must belong to (what its key slot is bound to).
    scope: tuple[str, str] | None
    key_id: str
    #: What the reader asked for (checked against an encrypted object's header).
    expected: Expected | None = None
    #: Sources that failed before one served (see :attr:`Event.failover`).
    failover: list[str] = dataclasses.field(default_factory=list)
    notes: ReadNotes = dataclasses.field(default_factory=ReadNotes)


#: Reads a verified object from a reader: ``(reader, layout, opened) -> (value, stats)``.
Consume = Callable[[ObjectReader, container.ObjectLayout, Opened], tuple[Any, PartialRead | None]]


class PullPath:
    def __init__(
        self,
        config: StashConfig,
        store: Store,
        registry: CodecRegistry,
        json_codec: JsonCodec,
        guard: Guard,
        placer: Placer,
        observer: Observer,
        pools: Pools,
    ) -> None:
        self.store = store
        self.registry = registry
        self.json_codec = json_codec
        self.converter = json_codec.converter
        self.guard = guard
        self.placer = placer
        self.observer = observer
        self.pools = pools
        self.config = config
        self.readahead = ReadAhead(self._prefetch, pools.fanin.get) if config.read_ahead else None
        #: Exclusive mode: every row a worker writes is a reference, so a plain one is refused
        #: (but for an operator extra link: see :mod:`xcomstash.pipeline.links`).
        self.refuse_plain_rows = config.exclusive and not config.accept_plain_rows

    # ---------------------------------------------------------- entry points

    def pull(
        self,
        stored: Any,
        coordinate: XComCoordinate | None = None,
        *,
        expected: Expected | None = None,
        readahead: bool = True,
    ) -> Any:
        """The value for what an xcom row holds: inline structure or reference."""
        if not is_reference(stored):
            return self._inline(stored, coordinate, expected)
        value, _ = self._read("pull", stored, coordinate, expected, self._decode_whole, readahead=readahead)
        return value

    def get_stored(self, coordinate: XComCoordinate) -> Any:
        """The value of ``coordinate`` found from the store alone, without its xcom row: the
        object its newest link names, else its per-XCom object.

        Without the row there is no signed reference, so what is checked differs from a pull,
        and :data:`STORE_ONLY` says so in the audit event: the object's integrity (every frame
        against its root digest, and that digest against the link's name) and, for an encrypted
        object, the DAG run its key is bound to and the XCom its authenticated header names.
        Not checked: that this is the value the row references now (a link of an older try may
        remain until it is purged), nor the readers a producer restricted the value to (they
        live in the row). Reading needs what reading the raw object needs: access to the store,
        and the keyset to decrypt."""
        started = time.perf_counter()
        try:
            key, link_digest = self._locate_stored(coordinate)
            ref = self._describe_stored(key, coordinate)
            if link_digest is not None and hex_of(ref.digest) != link_digest:
                raise IntegrityError(
                    f"the object a link of {coordinate} names has digest {ref.digest}, not the "
                    f"{link_digest} the link was written for",
                    uri=ref.uri,
                )
        except XComStashError as exc:
            self.observer.emit(Event("get", outcome_of(exc), coordinate, error=exc, key_id=STORE_ONLY))
            raise
        opened = Opened(ref, key, coordinate, (coordinate.dag_id, coordinate.run_id), STORE_ONLY,
                        Expected(**coordinate.as_dict()))
        try:
            value, _, source = within(
                self.config.pull_timeout,
                lambda: self._from_sources(opened, self._decode_whole, None, True),
                lambda: f"reading {coordinate} from {ref.uri}",
            )
        except XComStashError as exc:
            self._emit("get", opened, started, error=exc)
            raise
        self._emit("get", opened, started, source=source, fetched=ref.size)
        return value

    def _locate_stored(self, coordinate: XComCoordinate) -> tuple[str, str | None]:
        """The key of the object an XCom's newest link names (with the digest, in hex, that
        link was written for), else its per-XCom object's key (no digest to hold it to)."""
        found = [
            (info, parsed)
            for info in self.store.list(coordinate.links_prefix())
            if (parsed := parse_link_key(info.key)) is not None
        ]
        if found:
            info, parsed = max(found, key=lambda pair: pair[0].modified or 0.0)
            target = self.placer.link_target(info.key)
            if target is None:
                raise IntegrityError(f"the link {info.key} of {coordinate} names no blob of its run",
                                     uri=self.store.uri_for(info.key))
            return target, parsed.hex_digest
        key = coordinate.object_key()
        if self.store.head(key) is None:
            raise ObjectMissingError(
                f"the store holds no value of {coordinate} (no link under {coordinate.links_prefix()}, "
                "no per-XCom object): it was never offloaded, or was kept inline in the database",
                uri=self.store.uri_for(key),
            )
        return key, None

    def _describe_stored(self, key: str, coordinate: XComCoordinate) -> Reference:
        """A reference made from the object itself (what the row would hold, unsigned)."""
        uri = self.store.uri_for(key)
        with _read_errors(Reference(uri, 0, "", "", "", "", coordinate), coordinate):
            reader = self.store.open_reader(key)
            try:
                layout = container.read_layout(reader.size, reader.read_at)
            finally:
                reader.close()
        header = layout.header
        return Reference(uri=uri, size=reader.size, digest=layout.digest, codec=header.codec,
                         python_type=header.python_type, summary="", xcom=coordinate)

    def pull_many(self, stored_values: list[Any], *, expected: Expected | None = None) -> list[Any]:
        """Values for many rows at once (a mapped task's fan-in): up to :data:`FANIN_WORKERS`
        objects fetched at once, order preserved, the first failure (in order) raised.

        Every row gets the checks and the event of a single pull: each reference is opened
        (MAC, expected XCom, readers) here, then its object is fetched, verified and decoded on
        a deadline thread of its own, bounded by ``pull_timeout`` from its start. Those threads
        are the fan-in's concurrency: no pool thread that only waits for a deadline thread. After
        a failure no further object is fetched, and the reads already under way are waited for
        (each within its deadline) and observed before the failure is raised.

        The reads' events are emitted once the reads are done, in order, before any value is
        returned: emitting one (an audit log line: a write that gives up the GIL) while the
        other reads run made it wait behind them every time, and the emitting thread was the
        fan-in's bottleneck."""
        if sum(1 for s in stored_values if is_reference(s)) < 2:
            return [self.pull(s, expected=expected) for s in stored_values]
        results: list[Any] = [None] * len(stored_values)
        running: deque[tuple[int, Opened, float, Started]] = deque()
        failures: list[tuple[int, BaseException]] = []
        observed: list[Callable[[], None]] = []
        try:
            for index, stored in enumerate(stored_values):
                try:
                    if not is_reference(stored):
                        results[index] = self._inline(stored, None, expected)
                        continue
                    started = time.perf_counter()
                    opened = self._open("pull", stored, None, expected, check_readers=True)
                except BaseException as exc:  # raised once the reads under way are done
                    failures.append((index, exc))
                    break
                work = functools.partial(self._from_sources, opened, self._decode_whole, None, True)
                running.append((index, opened, started, Started(self.config.pull_timeout, work)))
                if len(running) >= FANIN_WORKERS and self._finish_pull(running.popleft(), results, failures, observed):
                    break
            while running:
                self._finish_pull(running.popleft(), results, failures, observed)
        finally:
            for emit in observed:
                emit()
        if failures:
            raise min(failures, key=lambda failure: failure[0])[1]
        return results

    def _finish_pull(
        self,
        item: tuple[int, Opened, float, Started],
        results: list[Any],
        failures: list[tuple[int, BaseException]],
        observed: list[Callable[[], None]],
    ) -> bool:
        """Wait for one read of :meth:`pull_many` and add its event to ``observed``; True if
        it failed."""
        index, opened, started, job = item
        try:
            value, _, source = job.result(
                lambda: f"the pull of {opened.coordinate or opened.ref.uri} from {opened.ref.uri}"
            )
        except BaseException as exc:
            if isinstance(exc, XComStashError):
                seconds = time.perf_counter() - started
                observed.append(functools.partial(self._emit, "pull", opened, started, error=exc, seconds=seconds))
            failures.append((index, exc))
            return True
        seconds = time.perf_counter() - started
        observed.append(functools.partial(
            self._emit, "pull", opened, started, source=source, fetched=opened.ref.size, seconds=seconds
        ))
        results[index] = value
        return False

    def read_table(
        self,
        stored: Any,
        columns: Sequence[str] | None = None,
        rows: tuple[int, int | None] | None = None,
        *,
        expected: Expected | None = None,
    ) -> tuple[Any, PartialRead | None]:
        """Some columns and/or rows ``[start, stop)`` of a stored table, fetching and
        verifying only the frames that hold them where the stored form allows it."""
        if not is_reference(stored):
            return select_in_memory(self._inline(stored, None, expected), columns, rows), None
        consume = lambda reader, layout, opened: self._decode_table(reader, layout, opened, columns, rows)  # noqa: E731
        return self._read("pull", stored, None, expected, consume, readahead=True, whole=False)

    def preview(
        self,
        stored: Any,
        coordinate: XComCoordinate,
        limits: PreviewLimits,
        actor: dict[str, Any] | None = None,
    ) -> PreviewResult:
        """A preview of the value a row holds, for a person (the Airflow UI). The same checks
        as a task's pull (MAC, the row's own XCom, readers, integrity of every frame read),
        observed (audited) once as a ``preview`` by ``actor``. A table is previewed from its
        first rows, read in part (:mod:`xcomstash.pipeline.head`); bytes from their first
        frame; anything else is read whole only up to ``limits.whole_bytes``."""
        if not is_reference(stored):
            value = self._inline(stored, coordinate, None, op="preview", actor=actor)
            codec = self.registry.for_value(value)
            info = StoredInfo(
                "inline",
                size=len(self.json_codec.dumps(stored)),
                codec=codec.name if codec is not None else JsonCodec.name,
                python_type=f"{type(value).__module__}.{type(value).__qualname__}".replace("builtins.", ""),
            )
            return PreviewResult(info, value_preview(value, limits, self.guard.config.scanner))
        consume = lambda reader, layout, opened: self._decode_preview(reader, layout, opened, limits)  # noqa: E731
        (preview, info), read = self._read(
            "preview", stored, coordinate, None, consume, readahead=False, whole=False, actor=actor
        )
        assert read is not None
        fetched = {"bytes_fetched": read.bytes_fetched, "frames_fetched": read.frames_fetched, "frames_total": read.frames_total}
        return PreviewResult(info, preview, fetched)

    def purge(
        self, items: Iterable[tuple[Any, XComCoordinate]], delete: Callable[[list[Opened]], PurgeResult]
    ) -> PurgeResult:
        """Open each row's reference with the same checks as a pull (readers excepted: a re-run
        of the producer purges its own values), against the XCom of the row it sits in, and
        hand those that pass to ``delete`` at once. A refusal (forged, copied, or pointing
        outside that XCom's objects) deletes nothing and is observed (audited) here."""
        started = time.perf_counter()
        opened: list[Opened] = []
        refused: list[str] = []
        for stored, coordinate in items:
            if not is_reference(stored):
                continue
            try:
                opened.append(self._open("purge", stored, coordinate, Expected(**coordinate.as_dict()), check_readers=False))
            except XComStashError as exc:
                refused.append(f"{coordinate}: {exc}")
        if not opened:
            return PurgeResult(refused=refused)
        try:
            result = delete(opened)
        except XComStashError as exc:
            for one in opened:
                self._emit("purge", one, started, error=exc)
            raise
        result.purged = len(opened)
        result.refused[:0] = refused
        for one in opened:
            self._emit("purge", one, started)
        return result

    def repair(self, items: Iterable[tuple[Any, XComCoordinate]], *, dry_run: bool = False) -> RepairResult:
        """Bring every location of a replicated store back to an intact copy of each row's
        value. Each reference is opened with the same checks as a purge (against the XCom of
        its row; readers excepted: maintenance reads on nobody's behalf); one that fails is
        refused and observed, and nothing is copied for it. Every row repaired is observed
        (audited) as a ``repair`` event naming the locations it copied to."""
        result = RepairResult(dry_run=dry_run)
        done: dict[str, Repaired] = {}
        for stored, coordinate in items:
            if not is_reference(stored):
                continue
            started = time.perf_counter()
            try:
                opened = self._open("repair", stored, coordinate, Expected(**coordinate.as_dict()), check_readers=False)
            except XComStashError as exc:
                result.refused.append(f"{coordinate}: {exc}")
                continue
            result.references += 1
            first = opened.key not in done
            if first:
                done[opened.key] = repair_object(self.store, opened.key, opened.ref, dry_run=dry_run)
            repaired = done[opened.key]
            if first:
                result.note(opened.ref.uri, repaired)
            error = None
            if repaired.lost:
                error = ObjectMissingError("no location holds an intact copy", uri=opened.ref.uri, coordinate=coordinate)
            elif repaired.errors:
                error = StoreError("; ".join(repaired.errors))
            if first and (repaired.copied or error is not None) and not dry_run:
                self.observer.emit(
                    Event(
                        "repair", outcome_of(error) if error is not None else OK, opened.ref.xcom or coordinate,
                        uri=opened.ref.uri, size=opened.ref.size, digest=opened.ref.digest, key_id=opened.key_id,
                        seconds=time.perf_counter() - started, error=error,
                        extra={"copied_to": repaired.copied},
                    )
                )
        return result

    def move(
        self,
        items: Iterable[tuple[Any, XComCoordinate]],
        replace: Callable[[XComCoordinate, Any, Any], bool],
        *,
        dry_run: bool = False,
    ) -> MoveResult:
        """Move each row's value out of a previous store into the store its DAG writes to (see
        :mod:`xcomstash.pipeline.move`). References are opened with the same checks as a
        repair; the new reference is re-signed and set with ``replace(coordinate, new, old)``
        (a compare-and-set on the row). An old object goes once every row naming it moved.
        Every reference moved or failed is observed (audited) as a ``move`` event."""
        result = MoveResult(dry_run=dry_run)
        names: dict[tuple[str, str], list[bool]] = {}  # (old URI, key) -> did each row move
        old_links: dict[tuple[str, str], list[str]] = {}  # the rows' links beside the old object
        for stored, coordinate in items:
            if not is_reference(stored):
                continue
            started = time.perf_counter()
            try:
                opened = self._open("move", stored, coordinate, Expected(**coordinate.as_dict()), check_readers=False)
            except XComStashError as exc:
                result.refused.append(f"{coordinate}: {exc}")
                continue
            result.references += 1
            ref, error = opened.ref, None
            try:
                link = coordinate.link_key(ref.digest)
                moved, copied = move_object(self.store, opened.key, ref, link, dry_run=dry_run)
                if moved is None:
                    result.in_place += 1
                    continue
                result.moved_bytes += copied
                if not dry_run:
                    doc = self.guard.seal_reference(moved.to_json(), ref.readers, coordinate.dag_id)
                    if not replace(coordinate, doc, stored):
                        raise StoreError(f"the row of {coordinate} changed while its value was moved; left as it is")
                result.moved += 1
            except XComStashError as exc:
                error = exc
                result.errors.append(f"{coordinate}: {exc}")
            names.setdefault((ref.uri, opened.key), []).append(error is None)
            old_links.setdefault((ref.uri, opened.key), []).append(coordinate.link_key(ref.digest))
            if not dry_run:
                self.observer.emit(
                    Event(
                        "move", outcome_of(error) if error is not None else OK, ref.xcom or coordinate,
                        uri=ref.uri, size=ref.size, digest=ref.digest, key_id=opened.key_id,
                        seconds=time.perf_counter() - started, error=error,
                    )
                )
        if not dry_run:
            for (uri, key), outcomes in names.items():
                source = source_store(self.store, uri)
                if source is None or not all(outcomes) or source is home_store(self.store, key):
                    continue
                try:
                    source.delete(key)
                    result.deleted += 1
                    for link in old_links.get((uri, key), []):
                        source.delete(link)
                except StoreError as exc:
                    result.errors.append(f"{uri}: moved, but the old object was not deleted: {exc}")
        return result

    # ---------------------------------------------------------------- stages

    def _inline(
        self,
        stored: Any,
        coordinate: XComCoordinate | None,
        expected: Expected | None,
        *,
        op: str = "pull",
        actor: dict[str, Any] | None = None,
    ) -> Any:
        started = time.perf_counter() if self.refuse_plain_rows or self.observer.wants_inline else 0.0
        if self.refuse_plain_rows:
            key = coordinate.key if coordinate is not None else expected.key if expected is not None else None
            if links.is_link_key(key):
                return self._link_row(stored, coordinate, expected, started)
            self._refuse_plain_row(coordinate, expected, op=op, actor=actor)
        value = self.converter.from_structure(stored)
        if self.observer.wants_inline:
            xcom = coordinate or _expected_dict(expected)
            event = inline_event(op, value, stored, xcom, started, self.registry, self.json_codec)
            self.observer.emit(dataclasses.replace(event, actor=actor) if actor is not None else event)
        elif self.observer.counts_inline:
            self.observer.count_inline(op, coordinate or _expected_dict(expected))
        return value

    def _link_row(
        self, stored: Any, coordinate: XComCoordinate | None, expected: Expected | None, started: float
    ) -> Any:
        """A plain row under an operator extra-link key, in exclusive mode: read as the plain
        JSON it is (never through the structure converter) if it has a link's shape, refused
        otherwise; observed on the link route either way."""
        problem = links.link_problem(stored)
        if problem is not None:
            self._refuse_plain_row(
                coordinate, expected,
                f"holds a plain value under an operator extra-link key that is not a link ({problem}): "
                f"exclusive mode keeps only a JSON string or a plain JSON value of at most "
                f"{links.MAX_LINK_BYTES:,} bytes there, so the row was not written through it (by the REST "
                "API or SQL, or by Airflow itself, which writes each operator link's URL when a task "
                "finishes without calling the XCom backend: a link larger than that)",
            )
        if self.observer.active:
            self.observer.emit(
                Event(
                    "pull", OK, coordinate or _expected_dict(expected), route=LINK, codec=JsonCodec.name,
                    summary=json_summary(stored), size=len(self.json_codec.dumps(stored)),
                    seconds=time.perf_counter() - started,
                )
            )
        return stored

    def _refuse_plain_row(
        self,
        coordinate: XComCoordinate | None,
        expected: Expected | None,
        why: str | None = None,
        *,
        op: str = "pull",
        actor: dict[str, Any] | None = None,
    ) -> None:
        xcom = coordinate or _expected_dict(expected)
        error = PlainRowError(
            f"the xcom row of {xcom or 'this XCom'} "
            + (
                why
                or "holds a plain value, but exclusive mode writes only references: the row was written "
                "around xcomstash (REST API, SQL). Rows written before exclusive was switched on: run "
                "'xcomstash migrate', or set [xcomstash] accept_plain_rows = True until it has run"
            )
        )
        self.observer.emit(Event(op, outcome_of(error), xcom, error=error, actor=actor))
        raise error

    def _read(
        self,
        op: str,
        stored: dict[str, Any],
        coordinate: XComCoordinate | None,
        expected: Expected | None,
        consume: Consume,
        *,
        readahead: bool,
        whole: bool = True,
        actor: dict[str, Any] | None = None,
    ) -> tuple[Any, PartialRead | None]:
        started = time.perf_counter()
        opened = self._open(op, stored, coordinate, expected, check_readers=True, actor=actor)
        ahead = self.readahead if readahead else None
        try:
            value, stats, source = within(
                self.config.pull_timeout,
                lambda: self._from_sources(opened, consume, ahead, whole),
                lambda: f"the pull of {opened.coordinate or opened.ref.uri} from {opened.ref.uri}",
            )
        except XComStashError as exc:
            self._emit(op, opened, started, error=exc, actor=actor)
            raise
        finally:
            if ahead is not None:
                ahead.note_read(opened.coordinate)
        fetched = stats.bytes_fetched if stats is not None else opened.ref.size
        self._emit(op, opened, started, source=source, fetched=fetched, actor=actor)
        return value, stats

    def _open(
        self,
        op: str,
        stored: dict[str, Any],
        coordinate: XComCoordinate | None,
        expected: Expected | None,
        *,
        check_readers: bool,
        actor: dict[str, Any] | None = None,
    ) -> Opened:
        """MAC, shape, expected XCom, readers and location: everything checked before any
        store access. A refusal is observed (audited) here."""
        try:
            if expected is None and coordinate is not None:  # the row's own XCom: all known
                expected = Expected(**coordinate.as_dict())
            # The MAC key is that of the DAG asked for where the reader knows it, never one
            # the row picks (a row claiming another DAG is then refused like a forged one).
            producer = stored.get("xcom")
            producer_dag = expected.dag_id if expected is not None and expected.dag_id is not None else (
                producer.get("dag_id") if isinstance(producer, dict) else None
            )
            key_id = self.guard.open_reference(stored, producer_dag if isinstance(producer_dag, str) else None)
            ref = Reference.from_json(stored)
            self.guard.admit_read(ref.readers if check_readers else None, ref.xcom, expected, f"the value at {ref.uri}")
            key = self.store.key_for(ref.uri)
            if key_id == UNSIGNED:
                self._admit_unsigned(ref, key, expected)
            if op in ("purge", "repair", "move") and coordinate is not None:  # it deletes or writes there
                owned_key(self.store, coordinate, ref)
        except XComStashError as exc:
            # Filed under the XCom asked for (a forged row must not decide where its refusal
            # is filed); what the row claimed is kept beside it.
            claimed = stored.get("xcom") if isinstance(stored.get("xcom"), dict) else None
            xcom = coordinate.as_dict() if coordinate is not None else _expected_dict(expected) if expected is not None else claimed or {}
            self.observer.emit(
                Event(
                    op, outcome_of(exc), xcom, uri=str(stored.get("uri", ""))[:300], error=exc,
                    claimed=claimed if claimed is not None and claimed != xcom else None, actor=actor,
                )
            )
            raise
        coordinate = coordinate or ref.xcom or XComCoordinate.from_object_key(key)
        return Opened(ref, key, coordinate, _scope(ref, coordinate, expected), key_id or "", expected)

    def _admit_unsigned(self, ref: Reference, key: str, expected: Expected | None) -> None:
        """A reference accepted without a MAC (while switching signing on) must point into
        the keyspace of the XCom asked for, at an object older than the switch."""
        what = f"the value at {ref.uri}"
        if expected is not None:
            expected.check(XComCoordinate.from_object_key(key), what)
            if expected.dag_id is not None and keyspace.dag_of(key) != expected.dag_id:
                raise ReferenceSignatureError(
                    f"unsigned reference in a row of DAG {expected.dag_id!r} points at an object of "
                    f"another DAG ({ref.uri})"
                )
        info = self.store.head(key)
        self.guard.admit_unsigned_object(info.modified if info is not None else None, ref.uri)

    def _sources(self, opened: Opened, ahead: ReadAhead | None, whole: bool) -> list[ReadSource]:
        sources = []
        if ahead is not None and opened.coordinate is not None:
            prefetched = ahead.take(opened.coordinate, opened.key)
            if prefetched is not None:
                sources.append(ReadSource("read-ahead", lambda: MemoryReader(prefetched)))
        sources.extend(
            self.store.read_sources(
                opened.key, size_hint=opened.ref.size, whole=whole, prefer=opened.ref.locations or ()
            )
        )
        return sources

    def _from_sources(
        self, opened: Opened, consume: Consume, ahead: ReadAhead | None, whole: bool
    ) -> tuple[Any, PartialRead | None, str]:
        """The first source whose bytes pass verification; the last error if none does."""
        ref, coordinate = opened.ref, opened.coordinate
        error: XComStashError | None = None
        opened.failover.clear()
        notes = opened.notes
        for source in self._sources(opened, ahead, whole):
            try:
                with _read_errors(ref, coordinate):
                    reader = source.open()
                if source.name == CACHE_SOURCE:
                    notes.cache = "hit" if reader is not None else "miss"
                if reader is None:
                    continue  # this source does not hold the object (a cache miss)
                try:
                    with _read_errors(ref, coordinate):
                        layout = container.verified_layout(reader, ref)
                        self._check_written_for(layout, opened)
                    value, stats = consume(reader, layout, opened)
                finally:
                    reader.close()
            except _NEXT_SOURCE as exc:
                if source.name == CACHE_SOURCE:
                    notes.cache = "miss"  # a damaged or unreadable entry did not serve
                if isinstance(exc, (IntegrityError, KeyUnavailableError)):
                    source.discard()
                error = exc
                opened.failover.append(f"{source.name}: {type(exc).__name__}")
                continue
            return value, stats, source.name
        assert error is not None, "a store offers at least one source"
        raise error

    def _check_written_for(self, layout: container.ObjectLayout, opened: Opened) -> None:
        """An encrypted object names its XCom in its header, which the decryption authenticates:
        it must be the XCom asked for (the key binds only the DAG, or run, so another XCom's
        object of the same DAG would decrypt). With encryption on, a plaintext object was not
        written by this deployment's workers and is refused (unless ``accept_plaintext_objects``).
        And an encrypted object is never opened through a reference accepted unsigned."""
        if layout.key_slot is None:
            if self.guard.refuses_plaintext:
                raise DecryptionError(
                    "the object is stored in plaintext but this deployment encrypts every value: it was "
                    "not written by its workers (for values stored before encryption was switched on, "
                    "set accept_plaintext_objects)"
                )
            return
        if opened.key_id == UNSIGNED:
            raise ReferenceSignatureError(
                f"the object at {opened.ref.uri} is encrypted: it is never read through an unsigned reference"
            )
        wanted = opened.coordinate.as_dict() if opened.coordinate is not None else {}
        if opened.expected is not None:
            wanted.update((k, v) for k, v in dataclasses.asdict(opened.expected).items() if v is not None)
        written = layout.header.xcom
        for name, value in wanted.items():
            if written.get(name) != value:
                raise DecryptionError(
                    f"the object was written for {name}={written.get(name)!r:.200}, not {name}={value!r:.200}: "
                    "another XCom's object behind this reference"
                )

    # ---------------------------------------------------------------- decode

    def _cipher(self, layout: container.ObjectLayout, opened: Opened) -> FrameCipher | None:
        return self.guard.opener(layout, opened.scope) if layout.key_slot is not None else None

    def _decode_whole(
        self, reader: ObjectReader, layout: container.ObjectLayout, opened: Opened
    ) -> tuple[Any, PartialRead | None]:
        ref, coordinate = opened.ref, opened.coordinate
        with _read_errors(ref, coordinate):
            cipher = self._cipher(layout, opened)
            try:
                payload = read_frames(
                    layout.frames, layout.body_offset, reader.read_at, reader.readinto_at, CallerFirst(self.pools.frames),
                    cipher=cipher,
                )
            finally:
                if cipher is not None:
                    opened.notes.crypto_seconds += cipher.seconds
        opened.notes.raw_size = layout.raw_size
        codec = self._codec_for(layout.header, opened)
        with _decode_errors(codec, opened):
            return codec.decode(memoryview(payload), layout.header.codec_meta), None

    def _decode_table(
        self,
        reader: ObjectReader,
        layout: container.ObjectLayout,
        opened: Opened,
        columns: Sequence[str] | None,
        rows: tuple[int, int | None] | None,
    ) -> tuple[Any, PartialRead | None]:
        meta = layout.header.codec_meta
        whole = (
            opened.ref.codec not in _PARTIAL_CODECS
            or "columns" in meta  # non-string labels: Arrow cannot select them by name
            or "column_range" in meta
        )
        if whole:
            value, _ = self._decode_whole(reader, layout, opened)
            return select_in_memory(value, columns, rows), None
        with _read_errors(opened.ref, opened.coordinate):
            cipher = self._cipher(layout, opened)
            source = FramedFile(layout, reader, cipher)
            try:
                table = read_arrow_subset(source, columns, rows, int(meta.get("batch_rows", 1 << 20)))
            finally:
                if cipher is not None:
                    opened.notes.crypto_seconds += cipher.seconds
        opened.notes.raw_size = layout.raw_size
        codec = self._codec_for(layout.header, opened)
        with _decode_errors(codec, opened):
            value = codec.from_table(table, meta)  # type: ignore[attr-defined]
        if rows is not None and meta.get("range_index") is not None:
            value.index = rows_of_range_index(meta["range_index"], rows[0], len(value))
        return value, PartialRead(source.bytes_fetched, source.frames_fetched, len(layout.frames), opened.ref.size)

    def _decode_preview(
        self, reader: ObjectReader, layout: container.ObjectLayout, opened: Opened, limits: PreviewLimits
    ) -> tuple[tuple[Preview, StoredInfo], PartialRead]:
        ref, header = opened.ref, layout.header
        scanner = self.guard.config.scanner
        info = StoredInfo(
            "store", uri=ref.uri, size=ref.size, codec=ref.codec, python_type=ref.python_type, summary=ref.summary,
            raw_bytes=layout.raw_size, body_bytes=layout.body_size, compression=header.compression,
            encrypted=layout.key_slot is not None, key_id=_slot_key_id(layout.key_slot), frames=len(layout.frames),
            readers=ref.readers.to_json() if ref.readers is not None else None,
        )
        with _read_errors(ref, opened.coordinate):
            cipher = self._cipher(layout, opened)
            source = FramedFile(layout, reader, cipher)
        meta = header.codec_meta
        if header.codec in _PARTIAL_CODECS:
            try:
                with _read_errors(ref, opened.coordinate):
                    head = read_table_head(source, limits.rows, int(meta.get("batch_rows", 1 << 20)))
            except XComStashError:
                raise
            except OSError:  # Arrow wraps what FramedFile raised while it read the schema
                if source.error is None:
                    raise
                with _read_errors(ref, opened.coordinate):
                    raise source.error from None
            except (HeadError, struct.error, IndexError, ValueError) as exc:
                raise DecodeError(f"could not read the table's first rows: {exc}", uri=ref.uri, coordinate=opened.coordinate) from None
            preview = table_from_head(head, limits, masker_for(scanner))
        elif header.codec == "bytes":
            with _read_errors(ref, opened.coordinate):
                data = source.read(min(limits.hex_bytes, layout.raw_size))
            preview = bytes_preview(data, layout.raw_size, limits, scanner)
        elif layout.raw_size <= limits.whole_bytes:
            value, _ = self._decode_whole(reader, layout, opened)
            return (value_preview(value, limits, scanner), info), PartialRead(
                layout.body_size, len(layout.frames), len(layout.frames), ref.size
            )
        elif header.codec == "numpy.npy":
            preview = self._array_header(source, ref, opened, limits)
        else:
            preview = Preview(
                "none", note=f"not previewed: {ref.codec} values are read whole, and this one is larger "
                f"({layout.raw_size:,} bytes) than the preview limit ({limits.whole_bytes:,} bytes)",
            )
        return (preview, info), PartialRead(source.bytes_fetched, source.frames_fetched, len(layout.frames), ref.size)

    def _array_header(self, source: FramedFile, ref: Reference, opened: Opened, limits: PreviewLimits) -> Preview:
        """Shape, dtype and order from the ``.npy`` header (the first bytes): no statistics."""
        import numpy as np

        with _read_errors(ref, opened.coordinate):
            source.seek(0)
            try:
                version = np.lib.format.read_magic(source)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(source)
            except ValueError as exc:
                raise DecodeError(f"not an .npy header: {exc}", uri=ref.uri, coordinate=opened.coordinate) from None
        return array_header_preview(
            shape, str(dtype), fortran,
            f"statistics not computed: the array ({ref.size:,} bytes) is larger than the preview limit "
            f"({limits.whole_bytes:,} bytes)",
        )

    def _codec_for(self, header: container.ObjectHeader, opened: Opened) -> Codec:
        try:
            return self.json_codec if header.codec == JsonCodec.name else self.registry.by_name(header.codec)
        except XComStashError as exc:  # a codec not registered in this worker
            raise DecodeError(str(exc), uri=opened.ref.uri, coordinate=opened.coordinate) from None

    # --------------------------------------------------------------- helpers

    def _emit(
        self,
        op: str,
        opened: Opened,
        started: float,
        *,
        source: str = "",
        error: BaseException | None = None,
        fetched: int | None = None,
        actor: dict[str, Any] | None = None,
        seconds: float | None = None,
    ) -> None:
        """``seconds``: how long the operation took, if it ended before this (else: until now)."""
        ref, notes = opened.ref, opened.notes
        self.observer.emit(
            Event(
                op, outcome_of(error) if error is not None else OK, ref.xcom or opened.coordinate,
                uri=ref.uri, size=ref.size, digest=ref.digest, key_id=opened.key_id, codec=ref.codec,
                summary=ref.summary, seconds=time.perf_counter() - started if seconds is None else seconds,
                source=source, error=error,
                failover=tuple(opened.failover), raw_size=notes.raw_size, fetched=fetched, cache=notes.cache,
                crypto_seconds=notes.crypto_seconds, actor=actor,
            )
        )

    def _prefetch(self, coordinate: XComCoordinate) -> tuple[str, bytes] | None:
        """The bytes of the object a (predicted) XCom most likely references. Only a guess:
        they are verified like any other source's."""
        key = self.placer.likely_key(coordinate)
        reader = self.store.open_reader(key)
        try:
            if reader.size > MAX_OBJECT_BYTES:
                return None
            return key, reader.read_at(0, reader.size)
        finally:
            reader.close()


def _slot_key_id(slot: bytes | None) -> str:
    """The id of the key an encrypted object's data key is wrapped with ("" if none)."""
    if slot is None:
        return ""
    try:
        return KeySlot.parse(slot).key_id
    except XComStashError:
        return ""


def _scope(ref: Reference, coordinate: XComCoordinate | None, expected: Expected | None) -> tuple[str, str] | None:
    """The DAG and run an encrypted object must belong to: what the reader asked for where it
    knows, else what the (verified) reference says, else where the object lives."""
    known = [c for c in (ref.xcom, coordinate) if c is not None]
    dag_id = expected.dag_id if expected is not None and expected.dag_id is not None else None
    run_id = expected.run_id if expected is not None and expected.run_id is not None else None
    if dag_id is None and known:
        dag_id = known[0].dag_id
    if run_id is None and known:
        run_id = known[0].run_id
    if dag_id is None or run_id is None:
        return None
    return dag_id, run_id


def _expected_dict(expected: Expected | None) -> dict[str, Any]:
    if expected is None:
        return {}
    return {k: v for k, v in dataclasses.asdict(expected).items() if v is not None}


@contextmanager
def _read_errors(ref: Reference, coordinate: XComCoordinate | None) -> Iterator[None]:
    """Map everything that can go wrong while fetching and verifying onto our hierarchy,
    naming the XCom and the URI."""
    try:
        yield
    except ReadError as exc:
        if exc.coordinate is None and coordinate is not None:
            raise type(exc)(exc.detail, uri=ref.uri, coordinate=coordinate) from exc
        raise
    except StoreError as exc:
        raise StoreReadError(str(exc), uri=ref.uri, coordinate=coordinate) from exc
    except (container.ObjectFormatError, FrameError) as exc:
        raise IntegrityError(f"stored object is corrupt: {exc}", uri=ref.uri, coordinate=coordinate) from None


@contextmanager
def _decode_errors(codec: Codec, opened: Opened) -> Iterator[None]:
    try:
        yield
    except XComStashError:
        raise
    except Exception as exc:
        raise DecodeError(
            f"codec {codec.name!r} could not decode the object: {type(exc).__name__}: {exc}",
            uri=opened.ref.uri,
            coordinate=opened.coordinate,
        ) from exc
