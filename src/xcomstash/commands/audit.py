"""``xcomstash audit``: query the durable audit log (the JSON-lines objects under ``!audit/``
in the store) by DAG, run, task, key, operation, outcome and time range."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from xcomstash.commands import _common
from xcomstash.observe import audit


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "audit",
        help="query the audit log (pushes, pulls, purges, denials, integrity failures)",
        description=(
            "Print audit events from the store's durable audit log. Without --store-url the "
            "store comes from Airflow's [xcomstash] store_url (and its connection for S3)."
        ),
    )
    parser.add_argument("--store-url", help="file:///path or s3://[conn_id@]bucket/prefix")
    parser.add_argument("--dag", dest="dag_id")
    parser.add_argument("--run", dest="run_id")
    parser.add_argument("--task", dest="task_id")
    parser.add_argument("--key")
    parser.add_argument("--op", choices=audit.OPS)
    parser.add_argument("--outcome", choices=audit.OUTCOMES)
    parser.add_argument("--since", help="ISO 8601 time or relative (30m, 2h, 7d)")
    parser.add_argument("--until", help="ISO 8601 time or relative (30m, 2h, 7d)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    parser.add_argument("--quiet", "-q", action="store_true", help="no notes on stderr")
    parser.add_argument("--limit", type=int, default=0, help="print at most this many (the newest)")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="check the hash chains of the whole audit log instead of querying it: exit 2 if "
        "objects or lines were edited, truncated, renamed or deleted",
    )
    parser.add_argument(
        "--keysets",
        help="keyset sources as in [xcomstash] keysets, to check keyed chains "
        "(default: that option, when Airflow's configuration is available)",
    )
    parser.set_defaults(func=run)


def open_configured_store(url: str | None) -> Any:
    """The store named on the command line, or the one Airflow's configuration names."""
    from xcomstash.airflow.connections import client_for
    from xcomstash.airflow.settings import read_config
    from xcomstash.stores import open_store

    return open_store(url or read_config()[0].store_url, clients=client_for)


def _durable_log_off() -> str | None:
    """Why this installation writes no durable audit log (so an empty answer is expected), or
    None when it does, or when Airflow's configuration cannot be read here."""
    try:
        from xcomstash.airflow.security_settings import read_security
        from xcomstash.airflow.settings import _conf

        conf = _conf()
        setting = (conf.get("xcomstash", "audit", fallback="auto") or "auto").strip().lower()
        secured = read_security(conf).keyring is not None
    except Exception:
        return None
    effective = ("log,store" if secured else "log") if setting == "auto" else setting
    if "store" in {name.strip() for name in effective.split(",")}:
        return None
    return (
        f"the durable audit log is off here ([xcomstash] audit = {setting}): events go to the task logs "
        "only. Set audit = log,store (or configure keysets with audit = auto) to keep them in the store"
    )


def _keyring(spec: str | None) -> Any:
    from xcomstash.security.crypto.keyset import load_keyring

    if spec is not None:
        return load_keyring(spec, {})
    try:
        from xcomstash.airflow.security_settings import variable_source
        from xcomstash.airflow.settings import SECTION, _conf

        configured = _conf().get(SECTION, "keysets", fallback="") or ""
    except ImportError:  # no Airflow here: only --keysets can name keys
        return None
    return load_keyring(configured, {"variable": variable_source})


def verify(args: argparse.Namespace) -> int:
    import json

    from xcomstash.airflow.security_settings import audit_key_lookup
    from xcomstash.errors import XComStashError

    try:
        keyring = _keyring(args.keysets)
        store = open_configured_store(args.store_url)
        report = audit.verify_log(store, audit_key_lookup(keyring), require_keyed=keyring is not None)
    except XComStashError as exc:
        print(f"xcomstash audit: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_json(), indent=2), file=_common.out(args))
    else:
        for problem in report.problems:
            print(f"TAMPERED {problem}")
        for what, items in (
            ("open chain", report.open_chains),
            ("not chained", report.unchained),
            ("key not held, not checked", report.unverifiable),
        ):
            for item in items:
                print(f"warning ({what}): {item}")
        print(
            f"audit log: {report.objects:,} objects, {report.events:,} events, {report.writers:,} writers; "
            + ("chains intact" if report.ok else f"{len(report.problems):,} problems")
            + (f", {len(report.open_chains):,} open chains" if report.open_chains else "")
        )
    return 0 if report.ok else 2


def run(args: argparse.Namespace) -> int:
    if args.verify:
        return verify(args)
    try:
        query = audit.Query(
            dag_id=args.dag_id,
            run_id=args.run_id,
            task_id=args.task_id,
            key=args.key,
            op=args.op,
            outcome=args.outcome,
            since=audit.parse_time(args.since) if args.since else None,
            until=audit.parse_time(args.until) if args.until else None,
        )
    except ValueError as exc:
        print(f"xcomstash audit: {exc}", file=sys.stderr)
        return 2
    store = open_configured_store(args.store_url)
    events = list(audit.read_events(store, query))
    if args.limit > 0:
        events = events[-args.limit :]
    if not events and not args.quiet and (note := _durable_log_off()):
        print(f"xcomstash audit: {note}", file=sys.stderr)
    if args.json:
        stream = _common.out(args)
        for event in events:
            print(event.to_json(), file=stream)
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(events)} audit events", show_lines=False)
    for column in ("time (UTC)", "op", "outcome", "dag / run", "task[map] / key", "by", "bytes", "key id", "error"):
        table.add_column(column, overflow="fold")
    for e in events:
        x, a = e.xcom, e.actor
        by = (
            a["command"] + (f" ({a['user']})" if a.get("user") else "")
            if "command" in a
            else f"{a.get('dag_id')}.{a.get('task_id')} try {a.get('try_number')}" if a else ""
        )
        error = e.error
        if e.claimed:
            c = e.claimed
            error = f"{error} [row claimed {c.get('dag_id')}/{c.get('run_id')}/{c.get('task_id')}[{c.get('map_index')}]/{c.get('key')}]"
        table.add_row(
            e.ts.replace("T", " ").rstrip("Z"),
            e.op,
            e.outcome,
            f"{x.get('dag_id')} / {x.get('run_id')}",
            f"{x.get('task_id')}[{x.get('map_index')}] / {x.get('key')}",
            by,
            f"{e.size:,}" if e.size is not None else "",
            e.key_id,
            error,
        )
    Console(width=200).print(table)
    return 0
