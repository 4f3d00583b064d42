"""``xcomstash migrate``: rewrite XComs stored by BaseXCom or common.io into xcomstash's store
and format, resumably."""

from __future__ import annotations

import argparse
import os

from xcomstash.commands import _common

DESCRIPTION = """\
Move existing XComs into xcomstash: rows written by BaseXCom (the value inline in the
database) and by common.io's XComObjectStorageBackend (a path to a JSON object under
[common.io] xcom_objectstorage_path). Each value goes through the same routing as a push:
values xcomstash offloads are written to the store, verified, and the row is switched to a
reference; small BaseXCom values already are xcomstash's format and stay as they are.

Safe to interrupt at any point and to re-run: a row changes only after its object is written
and verified, and (compare-and-set) only if no task rewrote it meanwhile; common.io objects
are deleted (with --delete-legacy) only after their row switched, tracked in a journal so an
interrupted run's deletions are finished by the next.

exit status: 0 done, 1 the command failed, 2 some rows could not be migrated (listed).
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = _common.add_command(
        sub,
        "migrate",
        "move BaseXCom and common.io XComs into xcomstash (resumable)",
        DESCRIPTION,
    )
    parser.add_argument("--dry-run", action="store_true", help="count what would be migrated, change nothing")
    parser.add_argument("--dag", metavar="PATTERN", help="only DAGs matching this glob")
    parser.add_argument("--run", metavar="RUN_ID", help="only this DAG run")
    parser.add_argument("--delete-legacy", action="store_true",
                        help="delete each common.io object once its row points at xcomstash")
    parser.add_argument("--journal", metavar="PATH",
                        help="journal of common.io deletions in progress "
                        "(default: $AIRFLOW_HOME/xcomstash-migrate.journal)")
    _common.add_common_arguments(parser)
    parser.set_defaults(func=run)


def _fault_injector():
    """``XCOMSTASH_MIGRATE_FAULT=<step>:<n>`` kills the process at the n-th time it reaches
    ``step`` (tests use it to interrupt a migration for real)."""
    spec = os.environ.get("XCOMSTASH_MIGRATE_FAULT", "")
    if not spec:
        return lambda step: None
    step_name, _, count = spec.partition(":")
    remaining = [int(count or 1)]

    def fault(step: str) -> None:
        if step == step_name:
            remaining[0] -= 1
            if remaining[0] <= 0:
                os._exit(75)

    return fault


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xcomstash.errors import XComStashError
    from xcomstash.maintenance.migrate import Journal, LegacyAccess, Migrator
    from xcomstash.maintenance.report import human_bytes
    from xcomstash.maintenance.rows import RowFilter

    try:
        from airflow.sdk.bases.xcom import BaseXCom

        from xcomstash.airflow import legacy
        from xcomstash.airflow.row_sources import DatabaseRows
        from xcomstash.airflow.settings import engine

        class _Row:
            def __init__(self, value):
                self.value = value

        source = DatabaseRows()
        home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
        journal = Journal(Path(args.journal) if args.journal else Path(home) / "xcomstash-migrate.journal")
        migrator = Migrator(
            engine(),
            to_value=lambda stored: BaseXCom.deserialize_value(_Row(stored)),
            replace=source.replace_value,
            get_value=source.get_value,
            legacy=LegacyAccess(
                path_of=lambda value, xcom: legacy.checked_path(value, xcom, engine().guard),
                read=legacy.read,
                delete=legacy.purge,
            ),
            delete_legacy=args.delete_legacy,
            journal=journal,
            dry_run=args.dry_run,
            fault=_fault_injector(),
        )
        with _common.progress_bars(args) as advance:
            migrator.progress = lambda what, n: advance("migrating rows", n)
            report = migrator.run(source.iter_rows(RowFilter(dag_pattern=args.dag, run_id=args.run)))
    except XComStashError as exc:
        return _common.fail(str(exc))
    moved = report.migrated_basexcom + report.migrated_common_io
    summary = (
        f"migrate{' (dry run)' if report.dry_run else ''}: {report.rows_scanned:,} rows, "
        f"{'would migrate' if report.dry_run else 'migrated'} {moved:,} "
        f"({report.migrated_basexcom:,} BaseXCom, {report.migrated_common_io:,} common.io, "
        f"{human_bytes(report.bytes_written)} written), {report.already_xcomstash:,} already xcomstash, "
        f"{report.inline_kept:,} small kept inline, {report.missing:,} missing, {report.failed:,} failed"
        f" in {report.seconds:.1f}s"
    )

    def render() -> None:
        for p in report.problems:
            print(f"{p['problem']}: {_common.xcom_label(p['xcom'])}  {p['detail']}")

    _common.emit(args, report.to_json(), render, summary)
    return _common.EXIT_FOUND_PROBLEMS if (report.failed or report.missing) else _common.EXIT_OK
