"""``xcomstash keys rewrap``: move every encrypted object's data key to the primary key.

Only the 128-byte key slot of an object changes: the data key is unwrapped with the old key
and wrapped with the primary; frames, frame table and root digest stay as they are, so the
references in the xcom table stay valid. The object is rewritten as a whole (a store has no
partial overwrite) by streaming its bytes through, chunk by chunk.

Resumable and repeatable: objects already under the primary key are skipped after reading
their header, and ``--state FILE`` records the last object done so an interrupted run picks
up after it. The summary lists objects that could not be re-wrapped (a key missing from the
keyset, a damaged object); until that list is empty, do not remove old keys.

A task that overwrites an object while it is being re-wrapped wins: the object is re-checked
(size and modification time) just before it is replaced, and skipped if it changed.

References are signed too, under the keyset's key of the day. So that old keys can go, the
command also **re-signs the references in the xcom table** whose MAC names an older key
(``--references db``, the default where Airflow's database is reachable, as on the scheduler
host): each MAC is verified with the old key first, and the row is replaced only if it still
holds what was read (compare-and-set). ``--references skip`` leaves rows alone (then keep the
old keys until those rows are gone).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xcomstash.format import container
from xcomstash.coordinate import OBJECT_SUFFIX
from xcomstash.security.crypto.keyset import KeyRing, load_keyring
from xcomstash.security.crypto.stream import KEY_SLOT_BYTES, Envelope, rewrap as rewrap_slot, scope_aad, slot_key_id
from xcomstash.errors import XComStashError

CHUNK = 8 * 1024 * 1024


def register(keys: argparse._SubParsersAction) -> None:
    parser = keys.add_parser("rewrap", help="re-wrap stored objects' data keys under the primary key (resumable)")
    parser.add_argument("--store-url", help="default: Airflow's [xcomstash] store_url")
    parser.add_argument("--keysets", help="keyset sources as in [xcomstash] keysets (default: that option)")
    parser.add_argument("--prefix", default="", help="only objects under this key prefix (e.g. a DAG id)")
    parser.add_argument("--state", type=Path, help="checkpoint file: resume after the last object it records")
    parser.add_argument("--dry-run", action="store_true", help="count what would be re-wrapped, change nothing")
    parser.add_argument(
        "--references", choices=("auto", "db", "skip"), default="auto",
        help="re-sign references in the xcom table signed by older keys (auto: if the database is reachable)",
    )
    parser.set_defaults(func=run)


@dataclass
class Summary:
    rewrapped: int = 0
    current: int = 0
    plaintext: int = 0
    skipped_changed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    old_key_ids: dict[str, int] = field(default_factory=dict)
    references_resigned: int = 0
    references_failed: list[tuple[str, str]] = field(default_factory=list)
    references_checked: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "references_resigned": self.references_resigned if self.references_checked else None,
            "references_failed": [{"xcom": k, "error": e} for k, e in self.references_failed],
            "rewrapped": self.rewrapped,
            "already_current": self.current,
            "not_encrypted": self.plaintext,
            "changed_while_rewrapping": self.skipped_changed,
            "failed": [{"key": k, "error": e} for k, e in self.failed],
            "rewrapped_from": self.old_key_ids,
        }


def rewrap_store(
    store: Any,
    keyring: KeyRing,
    *,
    prefix: str = "",
    state: Path | None = None,
    dry_run: bool = False,
    progress: Any = None,
) -> Summary:
    """Re-wrap every encrypted object under ``prefix``; see the module docstring."""
    after = ""
    if state is not None and state.exists():
        after = json.loads(state.read_text()).get("last_key", "")
    keys = sorted(
        info.key for info in store.list(prefix) if info.key.endswith(OBJECT_SUFFIX) and info.key > after
    )
    summary = Summary()
    task = progress.add_task("re-wrapping", total=len(keys)) if progress is not None else None
    for key in keys:
        try:
            outcome = _rewrap_one(store, keyring, key, dry_run)
        except (XComStashError, OSError) as exc:
            summary.failed.append((key, f"{type(exc).__name__}: {exc}"))
        else:
            kind, old_id = outcome
            if kind == "rewrapped":
                summary.rewrapped += 1
                summary.old_key_ids[old_id] = summary.old_key_ids.get(old_id, 0) + 1
            elif kind == "current":
                summary.current += 1
            elif kind == "plaintext":
                summary.plaintext += 1
            else:
                summary.skipped_changed += 1
        if state is not None and not dry_run:
            state.write_text(json.dumps({"last_key": key}))
        if progress is not None:
            progress.advance(task)
    return summary


def resign_references(rows: Any, keyring: KeyRing, summary: Summary, *, dry_run: bool = False) -> None:
    """Re-sign every reference whose MAC names a key other than its keyset's primary."""
    from xcomstash.security import signing
    from xcomstash.maintenance.rows import RowFilter, decode_value
    from xcomstash.format.reference import MARKER

    summary.references_checked = True
    for row in rows.iter_rows(RowFilter(references_only=True)):
        doc = decode_value(row.value)
        if not isinstance(doc, dict) or MARKER not in doc or "mac" not in doc:
            continue
        try:
            producer = doc.get("xcom") if isinstance(doc.get("xcom"), dict) else {}
            keyset = keyring.for_dag(str(producer.get("dag_id", row.coordinate.dag_id)))
            if signing.mac_key_id(doc["mac"]) == keyset.primary_id:
                continue
            signing.verify(keyset, doc)  # never re-sign what the old key did not sign
            if dry_run:
                summary.references_resigned += 1
                continue
            new = signing.signed(keyset, doc)
            new_value = json.dumps(new) if isinstance(row.value, (str, bytes)) else new
            if rows.replace_value(row.coordinate, row.value, new_value):
                summary.references_resigned += 1
        except XComStashError as exc:
            summary.references_failed.append((str(row.coordinate), f"{type(exc).__name__}: {exc}"))


def _rewrap_one(store: Any, keyring: KeyRing, key: str, dry_run: bool) -> tuple[str, str]:
    before = store.head(key)
    reader = store.open_reader(key)
    try:
        layout = container.read_layout(reader.size, reader.read_at)
        if layout.header.encryption is None or layout.key_slot is None:
            return "plaintext", ""
        envelope = Envelope.from_header(layout.header.encryption)
        # The object's own header names its DAG run: re-wrapping binds the slot to the scope
        # it was written for, the one its readers will ask for.
        dag_id, run_id = (str(layout.header.xcom.get(k, "")) for k in ("dag_id", "run_id"))
        keyset = keyring.for_dag(dag_id)
        old_id = slot_key_id(layout.key_slot)
        if old_id == keyset.primary_id:
            return "current", old_id
        aad = scope_aad(layout.header_bytes, envelope, dag_id, run_id)
        new_slot = rewrap_slot(keyset, layout.key_slot, aad)
        if new_slot is None or dry_run:
            return ("current", old_id) if new_slot is None else ("rewrapped", old_id)
        now = store.head(key)
        if before is None or now is None or (now.size, now.modified) != (before.size, before.modified):
            return "changed", old_id
        offset = layout.key_slot_offset
        with store.writer(key) as sink:
            _copy(reader, sink, 0, offset)
            sink.write(new_slot)
            _copy(reader, sink, offset + KEY_SLOT_BYTES, reader.size)
        return "rewrapped", old_id
    finally:
        reader.close()


def _copy(reader: Any, sink: Any, start: int, end: int) -> None:
    at = start
    while at < end:
        chunk = reader.read_at(at, min(CHUNK, end - at))
        if not chunk:
            raise OSError(f"object shrank while re-wrapping (at byte {at:,})")
        sink.write(chunk)
        at += len(chunk)


def run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from xcomstash.commands.audit import open_configured_store

    spec = args.keysets
    resolvers: dict[str, Any] = {}
    if spec is None or "variable:" in (spec or ""):
        try:
            from xcomstash.airflow.security_settings import variable_source
            from xcomstash.airflow.settings import _conf

            resolvers["variable"] = variable_source
            if spec is None:
                spec = _conf().get("xcomstash", "keysets", fallback="") or ""
        except ImportError:
            spec = spec or ""
    keyring = load_keyring(spec or "", resolvers)
    if keyring is None:
        print("xcomstash keys rewrap: no keysets (give --keysets or set [xcomstash] keysets)", file=sys.stderr)
        return 2
    store = open_configured_store(args.store_url)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        transient=not sys.stderr.isatty(), console=None,
    ) as progress:
        summary = rewrap_store(store, keyring, prefix=args.prefix, state=args.state, dry_run=args.dry_run, progress=progress)
    if args.references != "skip":
        try:
            from xcomstash.airflow.row_sources import DatabaseRows

            rows = DatabaseRows()
        except Exception as exc:
            if args.references == "db":
                print(f"xcomstash keys rewrap: cannot reach Airflow's database: {exc}", file=sys.stderr)
                return 2
            print(f"note: references not re-signed (no Airflow database here: {exc})", file=sys.stderr)
        else:
            resign_references(rows, keyring, summary, dry_run=args.dry_run)
    print(json.dumps(summary.to_json(), indent=2))
    return 1 if summary.failed or summary.references_failed else 0
