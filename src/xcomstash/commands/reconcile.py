"""``xcomstash reconcile``: delete stored objects no xcom row references any more (after a
grace period), and report rows whose object is missing."""

from __future__ import annotations

import argparse

from xcomstash.commands import _common

DESCRIPTION = """\
Compare the store with the xcom table and collect garbage.

Clearing tasks, deleting DAG runs and `airflow db clean` delete xcom rows without telling the
XCom backend. reconcile lists the store, reads every reference from the metadata database (or,
with --api-url, through Airflow's REST API), and deletes objects that no row references and
that were last written more than the grace period ago, so an object whose task has not yet
recorded its row is never touched. It also reports the opposite fault: rows whose object is
missing. Safe to run while Airflow runs, idempotent, and an interrupted run is simply resumed
by the next one. Only objects, links and uploads of xcomstash's layout are ever deleted (never
the audit log under !audit/ or anything else in the bucket), each one an audit event.

exit status: 0 clean, 1 the command failed, 2 rows reference missing objects.
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = _common.add_command(
        sub,
        "reconcile",
        "delete objects no xcom row references (garbage collection); report missing ones",
        DESCRIPTION,
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="report what would be deleted, delete nothing"
    )
    parser.add_argument(
        "--grace",
        metavar="DURATION",
        help="only collect objects older than this (e.g. 30m, 6h, 2d; default: "
        "[xcomstash] reconcile_grace_period, 6h)",
    )
    parser.add_argument(
        "--unfinished-grace",
        metavar="DURATION",
        help="remove uploads killed writers left unfinished (temporary files, multipart uploads, "
        "staged blocks) once older than this (default: the grace period, at most 1h)",
    )
    parser.add_argument("--dag", metavar="DAG_ID", help="only collect objects of this DAG")
    _common.add_common_arguments(parser, api=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xcomstash.coordinate import dag_prefix
    from xcomstash.errors import XComStashError
    from xcomstash.maintenance.reconcile import ReconcileOptions, Reconciler
    from xcomstash.maintenance.report import human_bytes, parse_duration
    from xcomstash.maintenance.rows import RowFilter

    try:
        grace = parse_duration(args.grace or _common.config_option("reconcile_grace_period", "6h"))
        unfinished_grace = parse_duration(args.unfinished_grace) if args.unfinished_grace else None
        store = _common.open_store(args)
        source = _common.row_source(args)
        engine = _common.maintenance_engine(store, "reconcile")
    except XComStashError as exc:
        return _common.fail(str(exc))
    prefix = dag_prefix(args.dag) if args.dag else ""
    options = ReconcileOptions(
        grace_seconds=grace,
        dry_run=args.dry_run,
        prefix=prefix,
        unfinished_grace_seconds=unfinished_grace,
    )
    selection = RowFilter(references_only=True)
    with _common.progress_bars(args) as advance:
        reconciler = Reconciler(
            store,
            options,
            progress=lambda what, n: advance(f"reading {what}" if what == "rows" else f"listing {what}", n),
            confirm=None if getattr(source, "snapshot", True) else source.get_value,
            on_delete=engine.observe_deletion,
        )
        try:
            report = reconciler.run(
                source.iter_rows(selection), rows_again=lambda: source.iter_rows(selection)
            )
        except XComStashError as exc:
            return _common.fail(str(exc))
        finally:
            engine.flush()  # the audit events of what was deleted
    verb = "would delete" if report.dry_run else "deleted"
    collected = report.orphans
    summary = (
        f"reconcile{' (dry run)' if report.dry_run else ''}: {report.listed:,} objects listed, "
        f"{report.live.count:,} referenced, {verb} {collected.count:,} orphans "
        f"({human_bytes(collected.bytes)}), {report.young_orphans.count:,} within the grace period, "
        f"{report.missing_count:,} missing, {len(report.errors):,} errors in {report.seconds:.1f}s"
    )

    def render() -> None:
        from rich.table import Table

        from xcomstash.maintenance.report import iso

        out = _common.console()
        table = Table(title=f"reconcile against {store.root_uri}", title_justify="left")
        for column in ("", "objects", "bytes", "oldest"):
            table.add_column(column, justify="right" if column in ("objects", "bytes") else "left")
        table.add_row("listed", f"{report.listed:,}", human_bytes(report.listed_bytes), "")
        table.add_row("referenced by rows", f"{report.live.count:,}", human_bytes(report.live.bytes), "")
        table.add_row(f"orphans ({verb})", f"{collected.count:,}", human_bytes(collected.bytes), iso(collected.oldest) or "")
        y = report.young_orphans
        table.add_row("orphans within grace", f"{y.count:,}", human_bytes(y.bytes), iso(y.oldest) or "")
        f = report.foreign
        table.add_row("not xcomstash objects (kept)", f"{f.count:,}", human_bytes(f.bytes), iso(f.oldest) or "")
        out.print(table)
        if collected.by_dag:
            by_dag = Table(title=f"orphans {verb}, by DAG", title_justify="left")
            by_dag.add_column("dag_id")
            by_dag.add_column("objects", justify="right")
            by_dag.add_column("bytes", justify="right")
            for dag, (count, size) in sorted(collected.by_dag.items(), key=lambda kv: -kv[1][1])[:20]:
                by_dag.add_row(dag, f"{count:,}", human_bytes(size))
            out.print(by_dag)
        for m in report.missing:
            out.print(f"[red]missing[/red] {m.uri} (row {m.coordinate})")
        if report.missing_count > len(report.missing):
            out.print(f"... and {report.missing_count - len(report.missing):,} more missing")
        for e in report.errors:
            out.print(f"[red]error[/red] {e}")
        if report.invalid_references:
            out.print(f"{report.invalid_references:,} rows carry a malformed reference (their URIs were kept)")

    document = report.to_json()
    _common.emit(args, document, render, summary)
    if report.errors:
        code = _common.EXIT_FAILED
    elif report.missing_count:
        code = _common.EXIT_FOUND_PROBLEMS
    else:
        code = _common.EXIT_OK
    return _common.record_run(store, "reconcile", document, summary, code)
