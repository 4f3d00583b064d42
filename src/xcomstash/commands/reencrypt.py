"""``xcomstash keys reencrypt``: fresh data keys for stored values (after a key may have leaked).

See :mod:`xcomstash.maintenance.reencrypt` for what it does and why it is crash-safe; this
module parses arguments, opens the store, the keyring and Airflow's database, and prints the
summary."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xcomstash.commands import _common
from xcomstash.errors import XComStashError


def register(keys: argparse._SubParsersAction) -> None:
    from xcomstash.maintenance import reencrypt

    parser = keys.add_parser(
        "reencrypt",
        help="re-encrypt stored values under fresh data keys and re-sign their references (key compromise)",
        description=reencrypt.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--store-url", help="default: Airflow's [xcomstash] store_url")
    parser.add_argument("--keysets", help="keyset sources as in [xcomstash] keysets (default: that option)")
    parser.add_argument("--key-id", help="only values whose key slot names this key (default: every encrypted value)")
    parser.add_argument("--dag", dest="dag_pattern", help="only DAG ids matching this glob")
    parser.add_argument("--before", help="only rows written before this time (ISO 8601, or e.g. 2h, 3d)")
    parser.add_argument("--state", type=Path, help="checkpoint and journal file: resume and finish an interrupted run")
    parser.add_argument("--dry-run", action="store_true", help="read and check every value, change nothing")
    parser.set_defaults(func=run, json_output=True)


def run(args: argparse.Namespace) -> int:
    from xcomstash.commands.audit import open_configured_store
    from xcomstash.commands.rewrap import database_rows, load_cli_keyring
    from xcomstash.maintenance.reencrypt import Options, audit_sink, reencrypt_values

    try:
        keyring = load_cli_keyring(args.keysets)
        if keyring is None:
            print("xcomstash keys reencrypt: no keysets (give --keysets or set [xcomstash] keysets)", file=sys.stderr)
            return 2
        before = None
        if args.before:
            from xcomstash.observe.audit import parse_time

            before = parse_time(args.before)
        rows = database_rows(True, "")
    except (XComStashError, ValueError) as exc:
        print(f"xcomstash keys reencrypt: {exc}", file=sys.stderr)
        return 2
    store = open_configured_store(args.store_url)
    audit = audit_sink(store)
    options = Options(key_id=args.key_id, dag_pattern=args.dag_pattern, before=before, dry_run=args.dry_run)
    try:
        summary = reencrypt_values(store, keyring, rows, options, state=args.state, runs=rows, audit=audit)
    finally:
        audit.flush()  # type: ignore[attr-defined]
    print(json.dumps(summary.to_json(), indent=2), file=_common.out(args))
    return 0 if summary.complete else 1
