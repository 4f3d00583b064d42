"""``xcomstash move``: after ``store_url`` moved (a new bucket or prefix), copy the values
still in the previous stores into the current one and rewrite their rows."""

from __future__ import annotations

import argparse
import json
from typing import Any

from xcomstash.commands import _common

DESCRIPTION = """\
After moving store_url to a new bucket or prefix, keep the old one in [xcomstash]
previous_store_urls: references into it stay readable, and nothing new is written there. Then
run this command (where the metadata database is reachable) to move the old values:

  xcomstash move --dry-run          # what would move
  xcomstash move                    # move; run again after an interruption

Each referenced object in a previous store is checked against its row (signature, XCom),
verified in full, copied to the store its DAG writes to now (same key) and verified again;
then the row's reference is rewritten to name the copy, re-signed, with a compare-and-set (a
row a task rewrote meanwhile is left alone), and the old object is deleted once every row
naming it moved. Every value moved is a 'move' event in the audit log. When a run reports
nothing left to move, remove the old store from previous_store_urls.

exit status: 0 everything is in the current store, 1 the command failed, 2 values could not
be moved (damaged, unreachable, rows changed meanwhile, refused rows).
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = _common.add_command(
        sub, "move", "move values out of previous_store_urls into store_url and rewrite their rows", DESCRIPTION
    )
    parser.add_argument("--dag", metavar="PATTERN", help="only XComs of DAGs matching this glob")
    parser.add_argument("--dry-run", action="store_true", help="report what would move; change nothing")
    _common.add_common_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xcomstash.errors import XComStashError
    from xcomstash.maintenance.report import human_bytes
    from xcomstash.maintenance.rows import RowFilter, decode_value

    engine = None
    raw: dict[Any, Any] = {}
    try:
        store = _common.open_store(args)
        engine = _common.maintenance_engine(store, "move")
        source = _common.row_source(args)
        selection = RowFilter(dag_pattern=args.dag, references_only=True)

        def replace(coordinate: Any, new: Any, old: Any) -> bool:
            stored = raw[coordinate]
            return source.replace_value(coordinate, stored, json.dumps(new) if isinstance(stored, (str, bytes)) else new)

        with _common.progress_bars(args) as advance:

            def rows():
                for row in source.iter_rows(selection):
                    advance("checking values", 1)
                    raw[row.coordinate] = row.value
                    yield decode_value(row.value), row.coordinate

            result = engine.move_rows(rows(), replace, dry_run=args.dry_run)
    except XComStashError as exc:
        return _common.fail(str(exc))
    finally:
        if engine is not None:
            engine.close()  # writes out the audit events
    verb = "would move" if args.dry_run else "moved"
    summary = (
        f"move{' (dry run)' if args.dry_run else ''}: {result.references:,} references, {result.in_place:,} "
        f"already in place, {verb} {result.moved:,} ({human_bytes(result.moved_bytes)}), deleted "
        f"{result.deleted:,} old objects, {len(result.errors):,} errors, {len(result.refused):,} refused"
    )

    def render() -> None:
        from rich.markup import escape

        out = _common.console()
        for error in result.errors:
            out.print(f"[red]error[/red] {escape(error)}")
        for refusal in result.refused:
            out.print(f"[yellow]refused[/yellow] {escape(refusal)}")

    _common.emit(args, result.to_json(), render, summary)
    return _common.EXIT_OK if not (result.errors or result.refused) else _common.EXIT_FOUND_PROBLEMS
