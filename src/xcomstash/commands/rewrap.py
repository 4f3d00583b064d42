"""``xcomstash keys rewrap``: move every encrypted object's data key to the primary key, and
re-sign the references that older keys signed.

Only the 128-byte key slot of an object changes: the data key is unwrapped with the old key
and wrapped with the primary; frames, frame table and root digest stay as they are, so the
references in the xcom table stay valid. The object is rewritten as a whole (a store has no
partial overwrite) through the store's atomic publish, so a reader sees the old object or the
new one, never a mix. (The data key itself stays the same: see ``keys reencrypt`` for a key
that may have leaked.)

**Crash safety.** The two halves are independent and each step is atomic: one object
published, or one row changed by compare-and-set. A reader accepts a slot and a MAC under any
key of its keyset, so while both the old and the new key are deployed every value reads,
whichever objects and rows were done when a run stopped. Old keys may only go once nothing
names them; ``keys remove`` checks that (see :mod:`xcomstash.maintenance.keyuse`).

**Resumable and repeatable.** Objects already under the primary key are skipped after reading
their header. ``--state FILE`` records the last object done and the objects that still need
work (failed, busy, changed), written atomically after each object, so an interrupted run
picks up where it stopped and retries what it could not do; a state written for another
primary key is ignored.

**Concurrent writers.** Objects of DAG runs that are queued or running are left alone (a task
of such a run may be writing the same object right now: re-wrapping a copy read a moment
earlier would overwrite its new object, and its signed reference would then fail); they are
reported as busy and done by the next run. The run state is read again just before each
object is replaced, and the object is checked once more inside the write, just before the
publish (same root digest and key slot as the copy), so a rewrite at any earlier moment is
noticed and the copy abandoned. Where the Airflow database cannot be reached the run states are
unknown (the summary says so) and only that last check protects a concurrent writer; a store
without conditional writes leaves a window of milliseconds between it and the publish.

**References** are signed too, under the keyset's key of the day. The command re-signs the
references in the xcom table whose MAC names an older key (``--references db``, the default
where Airflow's database is reachable, as on the scheduler host): each MAC is verified with the
old key first, the reference must have been written for the row it is in, and the row is
replaced only if it still holds what was read (compare-and-set). Rows it cannot vouch for (a
forged or edited MAC, a reference copied into another row) are listed and left alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

from xcomstash.commands import _common
from xcomstash.coordinate import OBJECT_SUFFIX, XComCoordinate
from xcomstash.errors import XComStashError
from xcomstash.format import container
from xcomstash.security.crypto.keyset import KeyRing, write_private_file
from xcomstash.security.crypto.stream import KEY_SLOT_BYTES, Envelope, rewrap as rewrap_slot, scope_aad, slot_key_id

CHUNK = 8 * 1024 * 1024
#: DAG run states in which a task may be writing an object right now.
BUSY_STATES = frozenset({"queued", "running", "restarting", "up_for_retry", "scheduled"})
STATE_VERSION = 2


class RunStates(Protocol):
    """Where the state of DAG runs comes from (the Airflow database)."""

    def run_states(
        self, runs: Iterable[tuple[str, str]] | None = None, *, only_states: Iterable[str] | None = None
    ) -> dict[tuple[str, str], str]: ...


def register(keys: argparse._SubParsersAction) -> None:
    parser = keys.add_parser(
        "rewrap",
        help="re-wrap stored objects' data keys under the primary key and re-sign references (resumable)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--store-url", help="default: Airflow's [xcomstash] store_url")
    parser.add_argument("--keysets", help="keyset sources as in [xcomstash] keysets (default: that option)")
    parser.add_argument("--prefix", default="", help="only objects under this key prefix (e.g. a DAG id)")
    parser.add_argument("--state", type=Path, help="checkpoint file: resume where the last run stopped")
    parser.add_argument("--dry-run", action="store_true", help="count what would be re-wrapped, change nothing")
    parser.add_argument(
        "--references", choices=("auto", "db", "skip"), default="auto",
        help="re-sign references in the xcom table signed by older keys (auto: if the database is reachable)",
    )
    parser.set_defaults(func=run, json_output=True)


@dataclass
class Summary:
    rewrapped: int = 0
    current: int = 0
    plaintext: int = 0
    skipped_changed: int = 0
    skipped_busy: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    old_key_ids: dict[str, int] = field(default_factory=dict)
    references_resigned: int = 0
    references_current: int = 0
    references_failed: list[tuple[str, str]] = field(default_factory=list)
    references_checked: bool = False
    #: Whether queued/running DAG runs could be recognised (the Airflow database was reachable).
    run_states_known: bool = False

    @property
    def complete(self) -> bool:
        """Nothing left that a later run could still do (forged rows are never done)."""
        return not (self.failed or self.skipped_busy or self.skipped_changed)

    def to_json(self) -> dict[str, Any]:
        return {
            "references_resigned": self.references_resigned if self.references_checked else None,
            "references_already_current": self.references_current if self.references_checked else None,
            "references_failed": [{"xcom": k, "error": e} for k, e in self.references_failed],
            "rewrapped": self.rewrapped,
            "already_current": self.current,
            "not_encrypted": self.plaintext,
            "changed_while_rewrapping": self.skipped_changed,
            "busy_runs_skipped": self.skipped_busy,
            "run_states_checked": self.run_states_known,
            "failed": [{"key": k, "error": e} for k, e in self.failed],
            "rewrapped_from": self.old_key_ids,
            "complete": self.complete and not self.references_failed,
        }


# --------------------------------------------------------------------- state


def _primaries(keyring: KeyRing) -> list[str]:
    return [keyset.primary_id for keyset in keyring.keysets()]


def read_state(state: Path | None, keyring: KeyRing) -> tuple[str, list[str]]:
    """``(last key done, keys to retry)`` from a checkpoint, or a fresh start when there is
    none, it is unreadable, or it was written for other primary keys."""
    if state is None or not state.exists():
        return "", []
    try:
        doc = json.loads(state.read_text())
    except (OSError, ValueError):
        return "", []
    if not isinstance(doc, dict):
        return "", []
    if doc.get("version") == STATE_VERSION and doc.get("primaries") != _primaries(keyring):
        return "", []  # another rotation: everything may need work again
    last = doc.get("last_key", "")
    retry = doc.get("retry", [])
    return (last if isinstance(last, str) else ""), [k for k in retry if isinstance(k, str)] if isinstance(retry, list) else []


def write_state(state: Path, keyring: KeyRing, last_key: str, retry: Iterable[str]) -> None:
    """Replace the checkpoint atomically (a crash leaves the previous one intact)."""
    doc = {"version": STATE_VERSION, "primaries": _primaries(keyring), "last_key": last_key, "retry": sorted(set(retry))}
    write_private_file(state, json.dumps(doc).encode())


# ------------------------------------------------------------------- objects


def rewrap_store(
    store: Any,
    keyring: KeyRing,
    *,
    prefix: str = "",
    state: Path | None = None,
    dry_run: bool = False,
    progress: Any = None,
    runs: RunStates | None = None,
) -> Summary:
    """Re-wrap every encrypted object under ``prefix``; see the module docstring."""
    after, retry = read_state(state, keyring)
    listed = sorted(info.key for info in store.list(prefix) if info.key.endswith(OBJECT_SUFFIX))
    keys = sorted({k for k in listed if k > after} | {k for k in retry if k in set(listed)})
    summary = Summary(run_states_known=runs is not None)
    busy = _busy_runs(runs)
    # Still to do: the retries (deleted ones are gone, nothing to do), dropped as they succeed;
    # a crash before one is reached keeps it in the checkpoint.
    pending = {k for k in retry if k in keys}
    task = progress.add_task("re-wrapping", total=len(keys)) if progress is not None else None
    last = after
    for key in keys:
        pending.discard(key)
        try:
            kind, old_id = _rewrap_one(store, keyring, key, dry_run, runs, busy)
        except (XComStashError, OSError) as exc:
            summary.failed.append((key, f"{type(exc).__name__}: {exc}"))
            pending.add(key)
        else:
            if kind == "rewrapped":
                summary.rewrapped += 1
                summary.old_key_ids[old_id] = summary.old_key_ids.get(old_id, 0) + 1
            elif kind == "current":
                summary.current += 1
            elif kind == "plaintext":
                summary.plaintext += 1
            elif kind == "busy":
                summary.skipped_busy += 1
                pending.add(key)
            else:
                summary.skipped_changed += 1
                pending.add(key)
        last = max(last, key)
        if state is not None and not dry_run:
            write_state(state, keyring, last, pending)
        if progress is not None:
            progress.advance(task)
    return summary


def _busy_runs(runs: RunStates | None) -> set[tuple[str, str]]:
    if runs is None:
        return set()
    return {run for run, state in runs.run_states(only_states=BUSY_STATES).items() if state in BUSY_STATES}


def _is_busy(runs: RunStates | None, busy: set[tuple[str, str]], dag_id: str, run_id: str) -> bool:
    """Busy at the start of the command, or now (read again just before replacing)."""
    if runs is None:
        return False
    if (dag_id, run_id) in busy:
        return True
    return runs.run_states([(dag_id, run_id)]).get((dag_id, run_id), "") in BUSY_STATES


def _rewrap_one(
    store: Any, keyring: KeyRing, key: str, dry_run: bool, runs: RunStates | None, busy: set[tuple[str, str]]
) -> tuple[str, str]:
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
        if _is_busy(runs, busy, dag_id, run_id):
            return "busy", old_id
        aad = scope_aad(layout.header_bytes, envelope, dag_id, run_id)
        new_slot = rewrap_slot(keyset, layout.key_slot, aad)
        if new_slot is None or dry_run:
            return ("current", old_id) if new_slot is None else ("rewrapped", old_id)
        if _is_busy(runs, set(), dag_id, run_id):
            return "busy", old_id
        now = store.head(key)
        if before is None or now is None or (now.size, now.modified) != (before.size, before.modified):
            return "changed", old_id
        offset = layout.key_slot_offset
        try:
            with store.writer(key) as sink:
                _copy(reader, sink, 0, offset)
                sink.write(new_slot)
                _copy(reader, sink, offset + KEY_SLOT_BYTES, reader.size)
                # Last check before the publish: the stored object is still the one copied
                # (same root digest and key slot). Size and modification time alone miss a
                # rewrite within the same second (S3 times have whole seconds), and a ranged
                # copy of an object replaced meanwhile would mix two objects.
                if _identity(store, key) != (layout.digest, layout.key_slot):
                    raise _Changed
        except _Changed:
            return "changed", old_id
        return "rewrapped", old_id
    finally:
        reader.close()


class _Changed(Exception):
    """The object was replaced while it was being re-wrapped: abandon the copy."""


def _identity(store: Any, key: str) -> tuple[str, bytes | None] | None:
    """Root digest and key slot of the object stored at ``key`` now (``None`` if gone)."""
    from xcomstash.errors import StoreError

    try:
        reader = store.open_reader(key)
    except StoreError:
        return None
    try:
        layout = container.read_layout(reader.size, reader.read_at)
        return layout.digest, layout.key_slot
    except (container.ObjectFormatError, StoreError):
        return None
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


# ---------------------------------------------------------------- references


def resign_references(rows: Any, keyring: KeyRing, summary: Summary, *, dry_run: bool = False) -> None:
    """Re-sign every reference whose MAC names a key other than its keyset's primary.

    A reference is re-signed only when the old key really signed it and it was written for the
    row it is in; candidates are collected first and then replaced one by one with
    compare-and-set, so no read transaction stays open while rows are written."""
    from xcomstash.format.reference import MARKER
    from xcomstash.maintenance.keyuse import check_written_for
    from xcomstash.maintenance.rows import RowFilter, decode_value
    from xcomstash.security import signing

    summary.references_checked = True
    todo: list[tuple[Any, dict[str, Any], Any]] = []
    for row in rows.iter_rows(RowFilter(references_only=True)):
        doc = decode_value(row.value)
        if not isinstance(doc, dict) or MARKER not in doc or "mac" not in doc:
            continue
        try:
            keyset = keyring.for_dag(_producer_dag(doc, row.coordinate))
            if signing.mac_key_id(doc["mac"]) == keyset.primary_id:
                summary.references_current += 1
                continue
            signing.verify(keyset, doc)  # never re-sign what the old key did not sign
            check_written_for(doc, row.coordinate)
        except XComStashError as exc:
            summary.references_failed.append((str(row.coordinate), f"{type(exc).__name__}: {exc}"))
            continue
        todo.append((row, doc, keyset))
    for row, doc, keyset in todo:
        if dry_run:
            summary.references_resigned += 1
            continue
        try:
            new = signing.signed(keyset, doc)
            new_value = json.dumps(new) if isinstance(row.value, (str, bytes)) else new
            if rows.replace_value(row.coordinate, row.value, new_value):
                summary.references_resigned += 1
            else:
                summary.references_failed.append(
                    (str(row.coordinate), "changed while re-signing (a task rewrote the row): run again")
                )
        except XComStashError as exc:
            summary.references_failed.append((str(row.coordinate), f"{type(exc).__name__}: {exc}"))


def _producer_dag(doc: dict[str, Any], coordinate: XComCoordinate) -> str:
    producer = doc.get("xcom") if isinstance(doc.get("xcom"), dict) else {}
    return str(producer.get("dag_id", coordinate.dag_id))


# ----------------------------------------------------------------------- CLI


def load_cli_keyring(spec: str | None) -> KeyRing | None:
    """The keyring of ``--keysets``, else of Airflow's ``[xcomstash] keysets``."""
    from xcomstash.security.crypto.keyset import load_keyring

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
    return load_keyring(spec or "", resolvers)


def database_rows(required: bool, what: str) -> Any:
    """Airflow's xcom table and DAG runs, or ``None`` (with a note) where unreachable."""
    try:
        from xcomstash.airflow.row_sources import DatabaseRows

        rows = DatabaseRows()
        rows.run_states([("", "")])  # touch the database now, not halfway through the work
        return rows
    except Exception as exc:
        if required:
            raise XComStashError(f"cannot reach Airflow's database: {exc}") from None
        print(f"note: {what} (no Airflow database here: {type(exc).__name__})", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from xcomstash.commands.audit import open_configured_store

    try:
        keyring = load_cli_keyring(args.keysets)
    except XComStashError as exc:
        print(f"xcomstash keys rewrap: {exc}", file=sys.stderr)
        return 2
    if keyring is None:
        print("xcomstash keys rewrap: no keysets (give --keysets or set [xcomstash] keysets)", file=sys.stderr)
        return 2
    try:
        rows = database_rows(
            args.references == "db",
            "objects of queued or running DAG runs cannot be recognised"
            + ("" if args.references == "skip" else "; references not re-signed"),
        )
    except XComStashError as exc:
        print(f"xcomstash keys rewrap: {exc}", file=sys.stderr)
        return 2
    store = open_configured_store(args.store_url)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        transient=not sys.stderr.isatty(), console=None,
    ) as progress:
        summary = rewrap_store(
            store, keyring, prefix=args.prefix, state=args.state, dry_run=args.dry_run, progress=progress, runs=rows
        )
    if args.references != "skip" and rows is not None:
        resign_references(rows, keyring, summary, dry_run=args.dry_run)
    print(json.dumps(summary.to_json(), indent=2), file=_common.out(args))
    return 0 if summary.complete and not summary.references_failed else 1
