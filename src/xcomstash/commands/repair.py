"""``xcomstash repair``: copy values to the store locations that lack them."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone

from xcomstash.commands import _common

DESCRIPTION = """\
With several locations in store_url (a replicated store): check every location's copy of each
value that xcom rows reference, and copy an intact copy over the ones a location lacks or holds
damaged (a push that succeeded at a write_quorum below all, a location restored from an old
backup, a damaged disk). Each reference is checked against its own row first (signature,
XCom), the source copy is verified in full before it is copied and the new copy after; every
copy is audited.

exit status: 0 every location holds an intact copy of every value, 1 the command failed,
2 values could not be repaired (no intact copy left, a location unreachable, refused rows).
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = _common.add_command(
        sub,
        "repair",
        "copy values to the locations of a replicated store that lack them or hold damaged copies",
        DESCRIPTION,
    )
    parser.add_argument("--dag", metavar="PATTERN", help="only XComs of DAGs matching this glob")
    parser.add_argument("--run", metavar="RUN_ID", help="only XComs of this DAG run")
    parser.add_argument("--newer-than", metavar="DURATION", help="only XComs written within DURATION (e.g. 1d)")
    parser.add_argument("--dry-run", action="store_true", help="report what would be copied; copy nothing")
    _common.add_common_arguments(parser, api=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xcomstash.errors import XComStashError
    from xcomstash.maintenance.report import human_bytes, parse_duration
    from xcomstash.maintenance.rows import RowFilter, decode_value
    from xcomstash.pipeline.repair import replicated_groups

    now = datetime.now(timezone.utc)
    engine = None
    try:
        selection = RowFilter(
            dag_pattern=args.dag,
            run_id=args.run,
            after=now - timedelta(seconds=parse_duration(args.newer_than)) if args.newer_than else None,
            references_only=True,
        )
        store = _common.open_store(args)
        groups = replicated_groups(store)
        if not groups:
            return _common.fail(
                f"the store {store.root_uri} has one location: nothing to repair (repair works on a "
                "store_url naming several locations)"
            )
        locations = [loc for group in groups for loc in group]
        engine = _common.maintenance_engine(store, "repair")
        source = _common.row_source(args)
        with _common.progress_bars(args) as advance:

            def rows():
                for row in source.iter_rows(selection):
                    advance("checking values", 1)
                    yield decode_value(row.value), row.coordinate

            result = engine.repair_rows(rows(), dry_run=args.dry_run)
    except XComStashError as exc:
        return _common.fail(str(exc))
    finally:
        if engine is not None:
            engine.close()  # writes out the audit events
    verb = "would copy" if args.dry_run else "copied"
    summary = (
        f"repair{' (dry run)' if args.dry_run else ''}: {result.references:,} references, "
        f"{len(locations)} locations; {result.healthy:,} objects intact everywhere, {verb} "
        f"{result.copies:,} copies of {result.repaired:,} objects ({human_bytes(result.copied_bytes)}), "
        f"{len(result.lost):,} lost, {len(result.errors):,} errors, {len(result.refused):,} refused"
    )
    document = result.to_json() | {"locations": [loc.root_uri for loc in locations]}

    def render() -> None:
        out = _common.console()
        for uri in result.lost:
            out.print(f"[red]lost[/red] {uri}  no location holds an intact copy")
        for error in result.errors:
            out.print(f"[red]error[/red] {error}")
        for refusal in result.refused:
            out.print(f"[yellow]refused[/yellow] {refusal}")

    _common.emit(args, document, render, summary)
    return _common.EXIT_OK if result.complete else _common.EXIT_FOUND_PROBLEMS
