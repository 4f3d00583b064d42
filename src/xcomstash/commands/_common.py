"""What the maintenance subcommands share: where the store and the rows come from, progress
bars on stderr, ``--json`` on stdout, one summary line, exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

#: Exit codes of the maintenance commands.
EXIT_OK = 0
EXIT_FAILED = 1  # the command could not do its work (store or database errors, bad options)
EXIT_FOUND_PROBLEMS = 2  # the work was done, and it found missing or corrupt objects


def add_command(sub: argparse._SubParsersAction, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    """A maintenance subcommand: ``summary`` in the command list, ``description`` (what it does,
    examples, exit status) printed by its ``--help`` as written."""
    return sub.add_parser(
        name, help=summary, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def add_common_arguments(parser: argparse.ArgumentParser, *, api: bool = False) -> None:
    group = parser.add_argument_group("where")
    group.add_argument(
        "--store-url",
        metavar="URL",
        help="the store to work on (default: [xcomstash] store_url of this Airflow installation)",
    )
    if api:
        group.add_argument(
            "--api-url",
            metavar="URL",
            help="read xcom rows through Airflow's REST API at URL (e.g. http://airflow:8080) "
            "instead of the metadata database",
        )
        group.add_argument(
            "--api-token",
            metavar="TOKEN",
            help="bearer token for --api-url (default: $XCOMSTASH_API_TOKEN)",
        )
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    out.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    # The command prints its --json document through emit() only (see xcomstash.cli.main).


def open_store(args: argparse.Namespace) -> Any:
    """The store named by ``--store-url``, else the one Airflow's configuration names, with
    every location and every per-DAG store (credentials from the Airflow connections the URLs
    name, or the defaults)."""
    from xcomstash.airflow.connections import client_for
    from xcomstash.airflow.settings import read_config
    from xcomstash.stores import open_store as _open

    url = getattr(args, "store_url", None)
    if url:
        return _open(url, clients=client_for)
    config = read_config()[0]
    return _open(
        config.store_url, clients=client_for, write_quorum=config.write_quorum, read_order=config.read_order,
        dag_stores=config.dag_stores, previous=config.previous_store_urls,
    )


def maintenance_engine(store: Any, command: str) -> Any:
    """An engine over ``store`` with this installation's security settings (keysets, so
    reference MACs are checked) and audit sinks, whose audit events name the command and
    the user who ran it. What maintenance deletes goes through its purge."""
    import getpass

    from xcomstash.airflow.security_settings import audit_sinks, read_security
    from xcomstash.airflow.settings import _conf, read_config
    from xcomstash.engine import Engine
    from xcomstash.observe.audit import AuditRecorder
    from xcomstash.security.guard import Guard

    import logging

    # What the engine logs (trace lines, warnings) goes to stderr: stdout is the report's.
    logger = logging.getLogger("xcomstash")
    if not any(getattr(h, "_xcomstash_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._xcomstash_cli = True  # type: ignore[attr-defined]
        handler.setLevel(logging.WARNING)
        logger.addHandler(handler)
        logger.propagate = False

    conf = _conf()
    security = read_security(conf)
    guard = Guard(security)
    audit_log = audit_sinks(conf, store, secured=security.keyring is not None, keyring=security.keyring)
    if audit_log is not None:
        # The durable sink only: the command's own report lists what it deleted and refused,
        # and stdout stays clean for --json.
        from xcomstash.observe.audit import AuditLog, StoreSink

        stored = [sink for sink in audit_log.sinks if isinstance(sink, StoreSink)]
        audit_log = AuditLog(stored) if stored else None
    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = ""
    actor = {"command": f"xcomstash {command}", "user": user}
    subscribers: list[Any] = [AuditRecorder(audit_log, lambda: actor)] if audit_log is not None else []
    from xcomstash.airflow.metrics import metrics_subscribers

    subscribers += metrics_subscribers(conf, own_process=True)
    import dataclasses

    # No read cache and no read-ahead: maintenance reads nothing twice, and the store given
    # on the command line (--store-url) is the one worked on.
    config = dataclasses.replace(read_config()[0], store_url=store.root_uri, cache_dir=None, read_ahead=False)
    return Engine(config, store, guard=guard, subscribers=subscribers)


def row_source(args: argparse.Namespace) -> Any:
    import os

    if getattr(args, "api_url", None):
        from xcomstash.airflow.row_sources import RestRows

        return RestRows(args.api_url, token=args.api_token or os.environ.get("XCOMSTASH_API_TOKEN"))
    from xcomstash.airflow.row_sources import DatabaseRows

    return DatabaseRows()


def record_run(store: Any, command: str, document: dict[str, Any], summary: str, exit_code: int) -> int:
    """Leave the record of this run in the store for the storage overview (see
    :mod:`xcomstash.maintenance.records`); returns ``exit_code``. Never fails the command."""
    from xcomstash.maintenance.records import record_run as _record

    _record(store, command, document, summary=summary, exit_code=exit_code)
    return exit_code


def config_option(name: str, fallback: str) -> str:
    from xcomstash.airflow.settings import SECTION, _conf

    return _conf().get(SECTION, name, fallback=fallback) or fallback


@contextmanager
def progress_bars(args: argparse.Namespace) -> Iterator[Callable[[str, int], None]]:
    """``advance(label, n)``: one live counter per label, on stderr (stdout stays JSON-clean)."""
    if getattr(args, "quiet", False) or not sys.stderr.isatty():
        yield lambda label, n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    tasks: dict[str, Any] = {}
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:

        def advance(label: str, n: int, total: int | None = None) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], advance=n, total=total if total is not None else None)

        yield advance


def xcom_label(xcom: Any) -> str:
    """``dag/run/task[map_index]/key`` for a report's XCom (a dict, or text already)."""
    if not isinstance(xcom, dict):
        return str(xcom)
    x = xcom
    return f"{x.get('dag_id')}/{x.get('run_id')}/{x.get('task_id')}[{x.get('map_index', -1)}]/{x.get('key')}"


def out(args: argparse.Namespace) -> Any:
    """Where a command's JSON goes: the real stdout (``cli.main`` points ``sys.stdout`` at
    stderr while a ``--json`` command runs, so that nothing else lands in the document)."""
    return getattr(args, "report_stream", None) or sys.stdout


def emit(args: argparse.Namespace, document: dict[str, Any], render: Callable[[], None], summary: str) -> None:
    """``--json``: the document on stdout. Otherwise: the rendered report, then the summary."""
    if getattr(args, "json", False):
        document = dict(document, summary=summary)
        print(json.dumps(document, indent=2, default=str), file=out(args))
        return
    render()
    print(summary)


def console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def fail(message: str) -> int:
    print(f"xcomstash: error: {message}", file=sys.stderr)
    return EXIT_FAILED
