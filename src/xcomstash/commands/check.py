"""``xcomstash check``: check this host's view of the deployment, one line per check."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys

from xcomstash.commands import _common

DESCRIPTION = """\
Check the deployment as this host sees it, after configuring a worker or an API server:
- the [xcomstash] configuration parses;
- every store location (each location of a replicated store_url, and each per-DAG store of
  dag_policies) opens with this host's connections and takes a probe object, written, read
  back and deleted at once (named "!check-...": reconcile and stats skip it);
- remote endpoints use TLS, with a certificate that is not about to expire;
- the read cache directory of remote stores is writable and has room;
- the stores' clocks (HTTP Date header, Redis TIME) and the metadata database's (where
  reachable) agree with this host's;
- each keyset is present, readable by this user only, and parses; the keysets' DAG patterns
  cover those of dag_policies.

One line per check: ok, warn or fail, what was found and, for a warning or failure, the fix.

examples:
  xcomstash check
  xcomstash check --json

exit status: 0 no check failed (warnings allowed), 1 the command itself failed, 2 at least
one check failed.
"""

_TAGS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def register(sub: argparse._SubParsersAction) -> None:
    parser = _common.add_command(
        sub, "check", "check stores, TLS, clocks and keys from this host (after configuring it)", DESCRIPTION
    )
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xcomstash.airflow.preflight import checks_here

    try:
        # Airflow logs what it does (e.g. the AWS connection's "credentials retrieved") to the
        # stdout it finds: the report's lines are the only thing on stdout.
        with contextlib.redirect_stdout(sys.stderr):
            results = checks_here()
    except Exception as exc:  # the checks report failures as lines; this is a bug or a broken install
        return _common.fail(f"the checks could not run: {type(exc).__name__}: {exc}")
    counts = {status: sum(r.status == status for r in results) for status in ("ok", "warn", "fail")}
    warnings = f"{counts['warn']} warning{'' if counts['warn'] == 1 else 's'}"
    summary = f"check: {counts['ok']} ok, {warnings}, {counts['fail']} failed"

    def render() -> None:
        width = max((len(r.name) for r in results), default=0)
        for r in results:
            line = f"{_TAGS.get(r.status, r.status)}  {r.name:<{width}}  {r.detail}"
            if r.fix and r.status != "ok":
                line += f"  -> fix: {r.fix}"
            print(line)

    document = {"checks": [dataclasses.asdict(r) for r in results], **counts}
    _common.emit(args, document, render, summary)
    return _common.EXIT_FOUND_PROBLEMS if counts["fail"] else _common.EXIT_OK
