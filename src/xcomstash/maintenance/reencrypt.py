"""Re-encrypt stored values under a fresh data key: what to do when a key may have leaked.

A re-wrap (``keys rewrap``) only re-seals an object's data key under the new primary key; the
data key itself, and so every frame, stays the same. Whoever holds the old key and an old copy
of the 128-byte key slot (a backup, a bucket version, a copy taken earlier) can still decrypt
the object. Re-encryption gives each value a **fresh data key**: every frame is decrypted and
sealed again, into a **new object**, and the row's reference is switched to it and re-signed.

Each value is read through the same checks as any read, in the order the pull path makes them:
the reference's MAC, then that it was written for the row it is in (the expected XCom), then
the object's size, root digest and codec, then every frame's SHA-256 and AES-GCM tag. A value
that fails any of them is reported and left alone.

**Crash safety**: the new object is published next to the old one (as a blob of its DAG run
with a link naming the XCom, the layout purge and reconcile know), the row is switched by
compare-and-set, and only then is the old object deleted. At every moment the row names an
object that exists and matches it. With ``--state`` the one value in flight is journaled before
its new object is published; the next run finishes it (deletes the old object if the row was
switched, else the new one). Without a journal, an interrupted value leaves at most one
orphaned object that ``xcomstash reconcile`` collects (or, for an old object, that the next
re-encryption run of the same value does not know about: use ``--state``).

Every value re-encrypted (or refused) is an audit event (op ``reencrypt``) naming the XCom, the
new object, its digest and key id.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

from xcomstash.coordinate import XComCoordinate, parse_blob_key, streamed_blob_key
from xcomstash.errors import IntegrityError, StoreError, XComStashError
from xcomstash.format import container, digests
from xcomstash.format.frames import Frame, FrameError, fetch_frame, frame_offsets
from xcomstash.format.reference import MARKER, Reference
from xcomstash.maintenance.rows import RowFilter, decode_value
from xcomstash.security import signing
from xcomstash.security.crypto.keyset import KeyRing, Keyset
from xcomstash.security.crypto.stream import Envelope, open_object, seal_object, slot_key_id
from xcomstash.security.readers import Expected

#: DAG run states in which a task may be writing the same XCom right now.
BUSY_STATES = frozenset({"queued", "running", "restarting", "up_for_retry", "scheduled"})
STATE_VERSION = 1


@dataclass
class ReencryptSummary:
    reencrypted: int = 0
    not_encrypted: int = 0
    other_key: int = 0
    skipped_busy: int = 0
    changed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    run_states_known: bool = False

    @property
    def complete(self) -> bool:
        return not (self.failed or self.skipped_busy or self.changed)

    def to_json(self) -> dict[str, Any]:
        return {
            "reencrypted": self.reencrypted,
            "not_encrypted": self.not_encrypted,
            "under_other_keys": self.other_key,
            "busy_runs_skipped": self.skipped_busy,
            "changed_while_reencrypting": self.changed,
            "run_states_checked": self.run_states_known,
            "failed": [{"xcom": k, "error": e} for k, e in self.failed],
            "recovered_from_journal": self.recovered,
            "complete": self.complete,
        }


@dataclass(frozen=True)
class Options:
    """Which values to re-encrypt."""

    #: Only values whose key slot names this key (default: every encrypted value).
    key_id: str | None = None
    dag_pattern: str | None = None
    #: Only rows written before this time (e.g. when the leaked key was replaced).
    before: datetime | None = None
    dry_run: bool = False


class _Journal:
    """``--state``: the last XCom done, and the one value in flight (written before its new
    object is published), replaced atomically."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.doc: dict[str, Any] = {"version": STATE_VERSION, "last": None, "pending": None}
        if path is not None and path.exists():
            try:
                loaded = json.loads(path.read_text())
            except (OSError, ValueError):
                loaded = None
            if isinstance(loaded, dict) and loaded.get("version") == STATE_VERSION:
                self.doc.update(loaded)

    @property
    def last(self) -> tuple[Any, ...] | None:
        last = self.doc.get("last")
        return tuple(last) if isinstance(last, list) else None

    def save(self, **changes: Any) -> None:
        self.doc.update(changes)
        if self.path is None:
            return
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.doc, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _order(c: XComCoordinate) -> tuple[Any, ...]:
    return (c.dag_id, c.run_id, c.task_id, c.map_index, c.key)


def reencrypt_values(
    store: Any,
    keyring: KeyRing,
    rows: Any,
    options: Options = Options(),
    *,
    state: Path | None = None,
    runs: Any = None,
    audit: Callable[[str, XComCoordinate, dict[str, Any], str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReencryptSummary:
    """Re-encrypt the values the xcom rows reference; see the module docstring.

    ``rows`` is a row source with ``replace_value`` (Airflow's database); ``runs`` gives DAG
    run states (queued and running runs are skipped); ``audit(outcome, xcom, new_reference,
    error)`` records each value."""
    summary = ReencryptSummary(run_states_known=runs is not None)
    journal = _Journal(state)
    if journal.doc.get("pending") and not options.dry_run:
        _recover(store, rows, journal, summary)
    after = journal.last
    selection = RowFilter(dag_pattern=options.dag_pattern, before=options.before, references_only=True)
    candidates = []
    for row in rows.iter_rows(selection):
        if after is not None and _order(row.coordinate) <= after:
            continue
        doc = decode_value(row.value)
        if isinstance(doc, dict) and MARKER in doc:
            candidates.append((row, doc))
    candidates.sort(key=lambda rd: _order(rd[0].coordinate))
    busy = (
        {r for r, s in runs.run_states(only_states=BUSY_STATES).items() if s in BUSY_STATES}
        if runs is not None
        else set()
    )
    for n, (row, doc) in enumerate(candidates, 1):
        coordinate = row.coordinate
        try:
            outcome, new_doc = _one(store, keyring, rows, row, doc, options, journal, runs, busy)
        except (XComStashError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            summary.failed.append((str(coordinate), error))
            if audit is not None:
                audit("failed", coordinate, {}, error)
        else:
            if outcome == "reencrypted":
                summary.reencrypted += 1
                if audit is not None and not options.dry_run:
                    audit("ok", coordinate, new_doc, "")
            elif outcome == "plaintext":
                summary.not_encrypted += 1
            elif outcome == "other-key":
                summary.other_key += 1
            elif outcome == "busy":
                summary.skipped_busy += 1
            else:
                summary.changed += 1
        # The checkpoint moves past a value only while nothing before it is left to do, so a
        # rerun retries every value that failed, was busy or changed.
        if not options.dry_run and summary.complete:
            journal.save(last=list(_order(coordinate)))
        if progress is not None:
            progress(n, len(candidates))
    return summary


def _one(
    store: Any,
    keyring: KeyRing,
    rows: Any,
    row: Any,
    doc: dict[str, Any],
    options: Options,
    journal: _Journal,
    runs: Any,
    busy: set[tuple[str, str]],
) -> tuple[str, dict[str, Any]]:
    coordinate: XComCoordinate = row.coordinate
    # The checks of the pull path, in its order: MAC, expected XCom, then the object.
    producer = doc.get("xcom") if isinstance(doc.get("xcom"), dict) else {}
    keyset = keyring.for_dag(str(producer.get("dag_id", coordinate.dag_id)))
    signing.verify(keyset, doc)
    ref = Reference.from_json(doc)
    Expected(**coordinate.as_dict()).check(ref.xcom, f"the value at {ref.uri}")
    old_key = store.key_for(ref.uri)
    if runs is not None and _busy(runs, busy, coordinate):
        return "busy", {}
    reader = store.open_reader(old_key)
    try:
        try:
            layout = container.verified_layout(reader, ref)
        except (container.ObjectFormatError, FrameError) as exc:
            raise IntegrityError(f"stored object is corrupt: {exc}", uri=ref.uri, coordinate=coordinate) from None
        if layout.key_slot is None or layout.header.encryption is None:
            return "plaintext", {}
        if options.key_id is not None and slot_key_id(layout.key_slot) != options.key_id:
            return "other-key", {}
        if options.dry_run:
            _copy_frames(reader, layout, keyset, coordinate, None)
            return "reencrypted", {}
        new_doc = _write_new_object(store, reader, layout, keyset, coordinate, ref, doc, journal)
    finally:
        reader.close()
    return _switch(store, rows, row, doc, new_doc, journal, runs, coordinate), new_doc


def _busy(runs: Any, busy: set[tuple[str, str]], c: XComCoordinate) -> bool:
    run = (c.dag_id, c.run_id)
    return run in busy or runs.run_states([run]).get(run, "") in BUSY_STATES


def _copy_frames(
    reader: Any,
    layout: container.ObjectLayout,
    keyset: Keyset,
    coordinate: XComCoordinate,
    sink: Any,
) -> tuple[bytes, bytes, bytes]:
    """Decrypt every frame (checked against the table and its tag) and, with a ``sink``, seal
    it again under a fresh data key and nonce prefix. Returns ``(preamble, slot, trailer)``."""
    assert layout.header.encryption is not None and layout.key_slot is not None
    dag_id, run_id = coordinate.dag_id, coordinate.run_id  # the scope the reader expects
    envelope = Envelope.from_header(layout.header.encryption)
    old = open_object(keyset, envelope, layout.header_bytes, layout.key_slot, dag_id, run_id)
    fresh = Envelope.new(envelope.scope_mode)
    header = dataclasses.replace(layout.header, encryption=fresh.to_header())
    head = container.preamble(header)
    slot, cipher = seal_object(keyset, fresh, head[container.PREAMBLE_SIZE :], dag_id, run_id)
    if sink is not None:
        sink.write(head)
        sink.write(slot)
    frames: list[Frame] = []
    body_size = 0
    count = len(layout.frames)
    for index, (frame, (offset, _)) in enumerate(zip(layout.frames, frame_offsets(layout.frames, layout.body_offset))):
        last = index == count - 1
        try:
            sealed = fetch_frame(index, frame, offset, reader.read_at)
        except FrameError as exc:
            raise IntegrityError(f"stored object is corrupt: {exc}", uri="", coordinate=coordinate) from None
        # The frame's table entry (method, raw length) is authenticated with it (format v2).
        plain = old.open(index, last, sealed, frame.method, frame.raw_len)
        resealed = cipher.seal(index, last, plain, frame.method, frame.raw_len)
        if sink is not None:
            sink.write(resealed)
        frames.append(Frame(frame.method, frame.raw_len, len(resealed), digests.digest(header.hash, resealed), header.hash))
        body_size += len(resealed)
    tail = container.trailer(frames, body_size, layout.raw_size)
    if sink is not None:
        sink.write(tail)
    return head, slot, tail


def _write_new_object(
    store: Any,
    reader: Any,
    layout: container.ObjectLayout,
    keyset: Keyset,
    coordinate: XComCoordinate,
    ref: Reference,
    doc: dict[str, Any],
    journal: _Journal,
) -> dict[str, Any]:
    """Write the re-encrypted object as a blob of the run with a link naming this XCom (link
    first, as every push does), journaled before it is published; the new reference, signed."""
    staged = streamed_blob_key(coordinate.run_prefix(), uuid.uuid4().hex)
    with store.new_object(staged) as pending:
        head, slot, tail = _copy_frames(reader, layout, keyset, coordinate, pending)
        digest = container.root_digest(head, tail, layout.header.hash)
        key = coordinate.blob_key(digest) if pending.cheap_publish else pending.staged_key
        link = coordinate.link_key(digest)
        new_doc = signing.signed(
            keyset,
            {**{k: v for k, v in doc.items() if k != signing.MAC_FIELD},
             "uri": store.uri_for(key), "digest": digest, "size": ref.size},
        )
        journal.save(pending={"xcom": coordinate.as_dict(), "old": doc, "new": new_doc, "new_key": key, "link": link})
        with store.writer(link) as sink:
            sink.write(key.encode())
        pending.publish(key)
    return new_doc


def _switch(
    store: Any,
    rows: Any,
    row: Any,
    old_doc: dict[str, Any],
    new_doc: dict[str, Any],
    journal: _Journal,
    runs: Any,
    coordinate: XComCoordinate,
) -> str:
    """Point the row at the new object (compare-and-set), then drop the old object; or drop
    the new one if the row changed meanwhile."""
    new_value = json.dumps(new_doc) if isinstance(row.value, (str, bytes)) else new_doc
    new_key = store.key_for(new_doc["uri"])
    link = coordinate.link_key(new_doc["digest"])
    if not rows.replace_value(coordinate, row.value, new_value):
        _drop_new(store, new_key, link)
        journal.save(pending=None)
        return "changed"
    # The new object must still be there (nothing may have collected it in between).
    if store.head(new_key) is None or store.head(link) is None:
        rows.replace_value(coordinate, new_value, row.value)
        journal.save(pending=None)
        raise StoreError(f"the re-encrypted object {new_key} vanished before the row was switched; row restored")
    _drop_old(store, coordinate, old_doc)
    journal.save(pending=None)
    return "reencrypted"


def _drop_new(store: Any, key: str, link: str) -> None:
    store.delete(link)
    store.delete(key)


def _drop_old(store: Any, coordinate: XComCoordinate, old_doc: dict[str, Any]) -> None:
    """Delete the object the row referenced before, if it is still exactly that object (a
    per-XCom object rewritten meanwhile by a task is not ours to delete)."""
    from xcomstash.pipeline.purge import purge_objects

    old = Reference.from_json(old_doc)
    key = store.key_for(old.uri)
    if parse_blob_key(key) is None:
        try:
            reader = store.open_reader(key)
        except StoreError:
            return
        try:
            same = reader.size == old.size and container.read_layout(reader.size, reader.read_at).digest == old.digest
        except (container.ObjectFormatError, StoreError):
            same = False
        finally:
            reader.close()
        if not same:
            return
    result = purge_objects(store, [(coordinate, old)])
    if result.errors:
        raise StoreError("; ".join(result.errors))


def _recover(store: Any, rows: Any, journal: _Journal, summary: ReencryptSummary) -> None:
    """Finish the value a crashed run left in flight: the row decides which object stays."""
    pending = journal.doc["pending"]
    coordinate = XComCoordinate.from_dict(pending.get("xcom"))
    if coordinate is None:
        journal.save(pending=None)
        return
    exists, value = rows.get_value(coordinate)
    now = decode_value(value) if exists else None
    new_doc, old_doc = pending["new"], pending["old"]
    if isinstance(now, dict) and now.get("uri") == new_doc["uri"] and now.get("digest") == new_doc["digest"]:
        _drop_old(store, coordinate, old_doc)
        summary.recovered.append(f"{coordinate}: switched; old object removed")
    else:
        _drop_new(store, pending["new_key"], pending["link"])
        summary.recovered.append(f"{coordinate}: not switched; new object removed")
    journal.save(pending=None)


def audit_sink(store: Any) -> Callable[[str, XComCoordinate, dict[str, Any], str], None]:
    """Audit events of re-encryption, to the log and the store's ``!audit/`` objects."""
    from xcomstash.observe.audit import AuditEvent, AuditLog, LoggingSink, StoreSink

    log = AuditLog([LoggingSink(), StoreSink(store)])

    def record(outcome: str, xcom: XComCoordinate, new_doc: dict[str, Any], error: str) -> None:
        mac = new_doc.get("mac", "")
        log.record(
            AuditEvent(
                "reencrypt", outcome, xcom.as_dict(),
                route="stored", uri=str(new_doc.get("uri", "")), size=new_doc.get("size"),
                digest=str(new_doc.get("digest", "")), key_id=mac.partition(":")[0] if mac else "", error=error,
            )
        )

    record.flush = log.flush  # type: ignore[attr-defined]
    return record


__all__: Iterable[str] = ["Options", "ReencryptSummary", "audit_sink", "reencrypt_values"]
