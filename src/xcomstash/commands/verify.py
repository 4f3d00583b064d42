"""``xcomstash verify``: re-read stored objects and check them against their references."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone

from xcomstash.commands import _common

DESCRIPTION = """\
Re-read the objects that xcom rows reference and check each against its reference: present,
the right size, the right root digest and, unless --quick, every frame's SHA-256. Objects
shared by several rows are read once. With --orphans, also count objects no row references
(a reconcile dry run).

With several locations in store_url, every location's copy is checked: a value intact in
some locations but not all is reported as degraded (``xcomstash repair`` restores it).

exit status: 0 all checked objects are intact, 1 the command failed, 2 objects are missing,
corrupt or degraded (listed in the report).
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = _common.add_command(
        sub,
        "verify",
        "re-read stored objects and check their digests; report corrupt and missing ones",
        DESCRIPTION,
    )
    parser.add_argument("--dag", metavar="PATTERN", help="only XComs of DAGs matching this glob")
    parser.add_argument("--run", metavar="RUN_ID", help="only XComs of this DAG run")
    parser.add_argument("--newer-than", metavar="DURATION", help="only XComs written within DURATION (e.g. 1d)")
    parser.add_argument("--older-than", metavar="DURATION", help="only XComs written more than DURATION ago")
    parser.add_argument("--sample", type=float, default=1.0, metavar="FRACTION",
                        help="check this fraction of the objects, chosen at random (default 1: all)")
    parser.add_argument("--seed", type=int, help="random seed for --sample")
    parser.add_argument("--quick", action="store_true",
                        help="check sizes and root digests only (reads headers and frame tables, not every byte)")
    parser.add_argument("--orphans", action="store_true", help="also report objects no row references")
    _common.add_common_arguments(parser, api=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xcomstash.errors import XComStashError
    from xcomstash.maintenance.report import human_bytes, parse_duration
    from xcomstash.maintenance.rows import RowFilter
    from xcomstash.maintenance.verify import VerifyOptions, verify

    if not 0 < args.sample <= 1:
        return _common.fail("--sample must be in (0, 1]")
    now = datetime.now(timezone.utc)
    try:
        selection = RowFilter(
            dag_pattern=args.dag,
            run_id=args.run,
            after=now - timedelta(seconds=parse_duration(args.newer_than)) if args.newer_than else None,
            before=now - timedelta(seconds=parse_duration(args.older_than)) if args.older_than else None,
            references_only=True,
        )
        store = _common.open_store(args)
        source = _common.row_source(args)
        with _common.progress_bars(args) as advance:
            report = verify(
                source.iter_rows(selection),
                store,
                VerifyOptions(sample=args.sample, seed=args.seed, full=not args.quick),
                progress=lambda what, n: advance("verifying objects", n),
            )
            if args.orphans:
                from xcomstash.maintenance.reconcile import ReconcileOptions, Reconciler

                grace = parse_duration(_common.config_option("reconcile_grace_period", "6h"))
                rec = Reconciler(store, ReconcileOptions(grace_seconds=grace, dry_run=True, report_missing=False))
                gc = rec.run(source.iter_rows(RowFilter(references_only=True)))
                report.orphans = {"count": gc.orphans.count + gc.young_orphans.count,
                                  "bytes": gc.orphans.bytes + gc.young_orphans.bytes,
                                  "older_than_grace": gc.orphans.to_json()}
    except XComStashError as exc:
        return _common.fail(str(exc))
    summary = (
        f"verify{' (quick)' if args.quick else ''}: {report.checked_rows:,} references checked "
        f"({report.checked_objects:,} objects, {human_bytes(report.bytes_read)} read), {report.ok:,} ok, "
        f"{report.corrupt:,} corrupt, {report.missing:,} missing, {report.unreadable:,} unreadable"
        + (f", {report.degraded:,} degraded (not intact in every location: run xcomstash repair)" if report.degraded else "")
        + (f", {report.orphans['count']:,} orphans" if report.orphans else "")
        + f" in {report.seconds:.1f}s"
    )

    def render() -> None:
        from rich.markup import escape

        out = _common.console()
        for p in report.problems:
            out.print(f"[red]{p.status}[/red] {escape(p.uri or '-')}  {escape(_common.xcom_label(p.xcom))}  {escape(p.detail)}")
        if report.skipped_by_sample:
            out.print(f"{report.skipped_by_sample:,} references not in the sample")

    document = report.to_json()
    _common.emit(args, document, render, summary)
    code = _common.EXIT_OK if report.healthy else _common.EXIT_FOUND_PROBLEMS
    return _common.record_run(store, "verify", document, summary, code)
