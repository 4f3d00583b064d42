"""Move XComs written by other backends into xcomstash's store and format, row by row.

Two kinds of rows are migrated: BaseXCom rows (the value inline as serde JSON) and rows of
common.io's ``XComObjectStorageBackend`` (a path to a JSON object). Each row goes through the
same engine call a task's push does, so the result is what xcomstash would have written: a
reference for a value it offloads, inline serde JSON for a small one (BaseXCom rows that stay
inline are left alone: they already are xcomstash's format).

Never losing a value, at any interruption point:

1. the value is read and written to the store (``written``), the object is read back and
   verified (``verified``);
2. for a common.io row, its path goes to the journal before the row changes;
3. the row is replaced, compare-and-set on its old value (``replaced``): a row a task rewrote
   meanwhile is left alone;
4. only then the common.io object is deleted (``legacy_deleted``) and its journal entry closed.

A crash before 3 leaves the row as it was (the object written is overwritten by the next
attempt: same key or same digest); a crash between 3 and 4 leaves a journal entry that the
next run finishes first. Re-running is always safe: migrated rows are skipped.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from xcomstash.coordinate import XComCoordinate
from xcomstash.errors import ObjectMissingError, ReadError, XComStashError
from xcomstash.maintenance.report import SAMPLE_SIZE
from xcomstash.maintenance.rows import XComRow, decode_value
from xcomstash.maintenance.verify import OK, check_object
from xcomstash.format.reference import MARKER, Reference
from xcomstash.pipeline import links

#: Steps at which a fault can be injected (tests) and after which a crash must be harmless.
STEPS = ("written", "verified", "replaced", "legacy_deleted")


@dataclass
class MigrateReport:
    dry_run: bool
    rows_scanned: int = 0
    already_xcomstash: int = 0
    inline_kept: int = 0  # BaseXCom rows xcomstash would keep inline too: already its format
    migrated_basexcom: int = 0
    migrated_common_io: int = 0
    bytes_written: int = 0
    legacy_deleted: int = 0
    journal_finished: int = 0
    changed_meanwhile: int = 0
    #: common.io rows whose path is not in their own XCom's folder (forged or copied): not
    #: read, not deleted.
    refused: int = 0
    missing: int = 0
    failed: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        doc = dict(vars(self))
        doc["seconds"] = round(self.seconds, 3)
        return doc

    def note(self, coordinate: XComCoordinate, what: str, detail: str) -> None:
        if len(self.problems) < SAMPLE_SIZE * 5:
            self.problems.append({"xcom": coordinate.as_dict(), "problem": what, "detail": detail})


@dataclass
class LegacyAccess:
    """How to recognise, read and delete common.io objects (Airflow-side callables)."""

    #: ``(row value, its XCom) -> path``; ``None``: not a common.io row; raises
    #: :class:`XComStashError` for a row that fails the checks of a read (forged, outside the base).
    path_of: Callable[[Any, XComCoordinate], Any | None]
    read: Callable[[Any], Any]
    delete: Callable[[Any], None]


def in_own_folder(path: Any, coordinate: XComCoordinate) -> bool:
    """Whether a common.io object lies where common.io writes that XCom's objects,
    ``<base>/<dag_id>/<run_id>/<task_id>/<uuid>.json[.gz]``: a row forged or copied through the
    REST API must not make migrate copy another XCom's value into it, or delete its object."""
    try:
        task_dir = path.parent
        run_dir = task_dir.parent
        return (task_dir.name, run_dir.name, run_dir.parent.name) == (
            coordinate.task_id, coordinate.run_id, coordinate.dag_id
        )
    except (AttributeError, ValueError):
        return False


class Journal:
    """Common.io objects whose rows are being switched: one JSON line per entry, appended
    before the row changes; entries are finished (object deleted) or dropped on resume."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def add(self, coordinate: XComCoordinate, legacy_value: str) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"xcom": coordinate.as_dict(), "path": legacy_value}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def entries(self) -> list[tuple[XComCoordinate, str]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:  # a line cut by a crash: its row was not changed yet
                continue
            coordinate = XComCoordinate.from_dict(doc.get("xcom"))
            if coordinate is not None and isinstance(doc.get("path"), str):
                out.append((coordinate, doc["path"]))
        return out

    def clear(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class Migrator:
    def __init__(
        self,
        engine: Any,
        *,
        to_value: Callable[[Any], Any],
        replace: Callable[[XComCoordinate, Any, Any], bool],
        get_value: Callable[[XComCoordinate], tuple[bool, Any]],
        legacy: LegacyAccess | None = None,
        delete_legacy: bool = False,
        journal: Journal | None = None,
        dry_run: bool = False,
        fault: Callable[[str], None] = lambda step: None,
        progress: Callable[[str, int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.to_value = to_value
        self.replace = replace
        self.get_value = get_value
        self.legacy = legacy
        self.delete_legacy = delete_legacy and legacy is not None
        self.journal = journal
        self.fault = fault
        self.progress = progress
        self.report = MigrateReport(dry_run=dry_run)
        if self.delete_legacy and journal is None:
            raise XComStashError("deleting common.io objects needs a journal")

    def run(self, rows: Iterable[XComRow]) -> MigrateReport:
        started = time.perf_counter()
        try:
            if not self.report.dry_run:
                self._finish_journal()
            for row in rows:
                self.report.rows_scanned += 1
                if self.progress is not None:
                    self.progress("rows", 1)
                try:
                    self._one(row)
                except ReadError as exc:
                    self.report.failed += 1
                    self.report.note(row.coordinate, "failed", str(exc))
            if self.delete_legacy and not self.report.dry_run:
                self._finish_journal()
        finally:
            self.report.seconds = time.perf_counter() - started
        return self.report

    def _finish_journal(self) -> None:
        """Delete the common.io objects of rows that were switched before a crash."""
        assert self.journal is not None or not self.delete_legacy
        if self.journal is None or self.legacy is None:
            return
        for coordinate, path in self.journal.entries():
            exists, value = self.get_value(coordinate)
            if exists and decode_value(value) == path:
                continue  # the row was not switched: the main pass migrates it again
            try:
                target = self.legacy.path_of(path, coordinate)
            except XComStashError as exc:
                self.report.note(coordinate, "journal entry refused", str(exc))
                continue
            if target is not None and not in_own_folder(target, coordinate):
                self.report.note(coordinate, "journal entry outside its XCom's folder", path)
                continue
            if target is None:  # [common.io] xcom_objectstorage_path no longer covers it
                self.report.note(coordinate, "journal entry not under the common.io path", path)
                continue
            self.legacy.delete(target)
            self.report.journal_finished += 1
        self.journal.clear()

    def _one(self, row: XComRow) -> None:
        report = self.report
        value = decode_value(row.value)
        if isinstance(value, dict) and MARKER in value:
            report.already_xcomstash += 1
            return
        try:
            path = self.legacy.path_of(value, row.coordinate) if self.legacy is not None else None
        except XComStashError as exc:
            report.failed += 1
            report.note(row.coordinate, "common.io row refused", str(exc))
            return
        if path is not None:
            if not in_own_folder(path, row.coordinate):
                report.refused += 1
                report.note(row.coordinate, "common.io path outside its XCom's folder (forged or copied row)", str(value)[:300])
                return
            if report.dry_run:
                report.migrated_common_io += 1
                return
            try:
                python_value = self.legacy.read(path)  # type: ignore[union-attr]
            except ObjectMissingError as exc:
                report.missing += 1
                report.note(row.coordinate, "common.io object missing", str(exc))
                return
            stored = self._write(row, python_value)
            if stored is None:
                return
            if self.delete_legacy:
                self.journal.add(row.coordinate, value)  # type: ignore[union-attr]
            if not self._replace(row, stored):
                return
            report.migrated_common_io += 1
            if self.delete_legacy:
                self.legacy.delete(path)  # type: ignore[union-attr]
                report.legacy_deleted += 1
                self.fault("legacy_deleted")
            return
        if self.engine.config.exclusive and links.is_link_key(row.coordinate.key):
            # An operator extra link stays in its row in exclusive mode (Airflow's API server
            # reads it there): kept if it has a link's shape, reported otherwise.
            problem = links.link_problem(value)
            if problem is None:
                report.inline_kept += 1
            else:
                report.failed += 1
                report.note(row.coordinate, "extra-link row is not a link (left as it is)", problem)
            return
        if report.dry_run:
            # BaseXCom rows hold serde JSON: its length is what routing measures.
            config = self.engine.config
            if config.exclusive or len(json.dumps(value, default=str)) >= config.threshold:
                report.migrated_basexcom += 1
            else:
                report.inline_kept += 1
            return
        python_value = self.to_value(row.value)
        stored = self.engine.serialize(python_value, row.coordinate)
        if not (isinstance(stored, dict) and MARKER in stored):
            report.inline_kept += 1
            return
        self.fault("written")
        if not self._verified(row, stored):
            return
        if self._replace(row, stored):
            report.migrated_basexcom += 1

    def _write(self, row: XComRow, python_value: Any) -> Any | None:
        stored = self.engine.serialize(python_value, row.coordinate)
        self.fault("written")
        if isinstance(stored, dict) and MARKER in stored and not self._verified(row, stored):
            return None
        return stored

    def _verified(self, row: XComRow, stored: dict[str, Any]) -> bool:
        ref = Reference.from_json(stored)
        status, detail, _ = check_object(self.engine.store, ref, full=True)
        if status != OK:
            self.report.failed += 1
            self.report.note(row.coordinate, "written object did not verify", detail)
            return False
        self.report.bytes_written += ref.size
        self.fault("verified")
        return True

    def _replace(self, row: XComRow, stored: Any) -> bool:
        if not self.replace(row.coordinate, row.value, stored):
            self.report.changed_meanwhile += 1
            return False
        self.fault("replaced")
        return True
