"""The ``xcomstash`` operator CLI: one entry point, one module per subcommand
(see :mod:`xcomstash.commands`)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys

from xcomstash import __version__
from xcomstash.commands import COMMAND_MODULES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xcomstash", description="Operate the xcomstash XCom store."
    )
    parser.add_argument("--version", action="version", version=f"xcomstash {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"xcomstash.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (getattr(args, "json", False) or getattr(args, "json_output", False)):
        return int(args.func(args))
    # --json (or a command whose report is JSON): the document must be all that stdout holds.
    # Airflow, imported by the command, logs to the stdout it finds at import (e.g. the AWS
    # connection's "credentials retrieved" line): everything but the document (printed to
    # _common.out(args)) goes to stderr.
    args.report_stream = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
