"""``xcomstash retention``: apply the ``[xcomstash] retention_policies`` (drop old runs' XComs,
rows and objects together)."""

from __future__ import annotations

import argparse
import time

from xcomstash.commands import _common

DESCRIPTION = """\
Apply the retention policies of [xcomstash] retention_policies (or --policies): per DAG id
pattern, a maximum age, the number of most recent runs to keep, and a maximum of stored bytes
per DAG. The XComs of every run a policy drops are deleted, rows first (through Airflow's own
XCom model, in one transaction per run), then their objects (link-aware: a blob another XCom
still uses stays). Runs that are queued or running are never touched.

Objects are deleted through the same purge as a task's: each reference is checked against the
row it sits in (its MAC when references are signed, the XCom it was written for) and may only
delete that XCom's own object or a blob of its DAG run. A forged or copied row deletes nothing
(it is listed under "refused"); every purge is an audit event naming this command.

example policy:
  [{"dag_id": "etl_*", "max_age": "30d", "keep_last_runs": 10, "max_bytes": "50GiB"},
   {"dag_id": "*", "max_age": "90d"}]

exit status: 0 done, 1 the command failed (bad policy, database or store error), 2 done, but
some rows held references that do not belong to them (refused, listed; nothing of theirs deleted).
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = _common.add_command(
        sub,
        "retention",
        "apply retention policies: drop XComs (rows and objects) of old DAG runs",
        DESCRIPTION,
    )
    parser.add_argument("--dry-run", action="store_true", help="report what would be dropped, change nothing")
    parser.add_argument("--policies", metavar="JSON", help="policies to apply instead of the configured ones")
    parser.add_argument("--dag", metavar="PATTERN", help="only DAGs matching this glob")
    _common.add_common_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xcomstash.errors import XComStashError
    from xcomstash.maintenance.report import human_bytes
    from xcomstash.maintenance.retention import RunUsage, parse_policies, plan
    from xcomstash.maintenance.rows import RowFilter, decode_value, reference_or_error

    started = time.perf_counter()
    try:
        policies = parse_policies(
            args.policies if args.policies is not None else _common.config_option("retention_policies", "")
        )
        if not policies:
            return _common.fail("no retention policies: set [xcomstash] retention_policies or pass --policies")
        store = _common.open_store(args)
        engine = _common.maintenance_engine(store, "retention")
        from xcomstash.airflow.row_sources import DatabaseRows

        source = DatabaseRows()
        runs = {
            (r["dag_id"], r["run_id"]): RunUsage(
                r["dag_id"], r["run_id"], r["run_after"].timestamp(), r["state"]
            )
            for r in source.runs(args.dag)
        }
        seen: set[int] = set()
        with _common.progress_bars(args) as advance:
            for row in source.iter_rows(RowFilter(dag_pattern=args.dag)):
                usage = runs.get((row.coordinate.dag_id, row.coordinate.run_id))
                if usage is None:
                    continue
                usage.rows += 1
                ref, _ = reference_or_error(row.value)
                if ref is not None and hash((row.coordinate.dag_id, row.coordinate.run_id, ref.uri)) not in seen:
                    seen.add(hash((row.coordinate.dag_id, row.coordinate.run_id, ref.uri)))
                    usage.stored_bytes += ref.size
                advance("reading rows", 1)
            prunes = plan(runs.values(), policies, time.time())
            rows_deleted = objects_deleted = bytes_deleted = 0
            errors: list[str] = []
            refused: list[str] = []
            if not args.dry_run:
                for prune in prunes:
                    # Read the run's references, then delete its rows, then the objects: an
                    # interruption in between leaves orphans for reconcile, never a dangling row.
                    run_rows = [
                        r
                        for r in source.iter_rows(RowFilter(run_id=prune.run.run_id))
                        if r.coordinate.dag_id == prune.run.dag_id
                    ]
                    rows_deleted += source.delete_run_xcoms(prune.run.dag_id, prune.run.run_id)
                    result = engine.purge_rows((decode_value(r.value), r.coordinate) for r in run_rows)
                    objects_deleted += result.deleted
                    bytes_deleted += result.deleted_bytes
                    errors.extend(result.errors)
                    refused.extend(result.refused)
                    advance("dropping runs", 1)
    except XComStashError as exc:
        return _common.fail(str(exc))
    finally:
        if "engine" in locals():
            engine.close()  # writes out the audit events
    seconds = time.perf_counter() - started
    verb = "would drop" if args.dry_run else "dropped"
    planned_rows = sum(p.run.rows for p in prunes)
    planned_bytes = sum(p.run.stored_bytes for p in prunes)
    summary = (
        f"retention{' (dry run)' if args.dry_run else ''}: {len(runs):,} runs with XComs, {verb} "
        f"{len(prunes):,} runs ({planned_rows:,} rows, {human_bytes(planned_bytes)} stored)"
        + ("" if args.dry_run else f"; deleted {rows_deleted:,} rows and {objects_deleted:,} objects")
        + (f", refused {len(refused):,} references that do not belong to their rows" if refused else "")
        + f", {len(errors)} errors in {seconds:.1f}s"
    )
    document = {
        "dry_run": args.dry_run,
        "policies": [p.describe() for p in policies],
        "runs_with_xcoms": len(runs),
        "prune": [p.to_json() for p in prunes],
        "rows_deleted": rows_deleted,
        "objects_deleted": objects_deleted,
        "bytes_deleted": bytes_deleted,
        "refused": refused,
        "errors": errors,
        "seconds": round(seconds, 3),
    }

    def render() -> None:
        from rich.table import Table

        table = Table(title=f"runs {verb}", title_justify="left")
        for c in ("dag_id", "run_id", "rows", "stored", "why"):
            table.add_column(c, justify="right" if c in ("rows", "stored") else "left")
        for p in prunes[:50]:
            table.add_row(p.run.dag_id, p.run.run_id, f"{p.run.rows:,}", human_bytes(p.run.stored_bytes), "; ".join(p.reasons))
        if prunes:
            _common.console().print(table)
        if len(prunes) > 50:
            print(f"... and {len(prunes) - 50:,} more runs")
        for r in refused[:20]:
            print(f"refused: {r}")
        for e in errors:
            print(f"error: {e}")

    _common.emit(args, document, render, summary)
    code = _common.EXIT_FAILED if errors else _common.EXIT_FOUND_PROBLEMS if refused else _common.EXIT_OK
    return _common.record_run(store, "retention", document, summary, code)
