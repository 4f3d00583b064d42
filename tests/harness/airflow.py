"""A private Airflow installation (AIRFLOW_HOME, config, a migrated metadata database on SQLite
or PostgreSQL), real Airflow CLI commands run against it, and what they left behind.

Nothing here imports Airflow: Airflow reads its configuration once per process from
``AIRFLOW_HOME``, so every Airflow command runs in a child process with its own environment.
The pytest process only reads the results: the metadata database (``sqlite3`` or psycopg2),
the object store directory, the xcomstash trace file and the command's output.

    template = migrate_sqlite_template(tmp)                 # once per session (~20 s)
    env = AirflowEnv(root, SqliteTemplate(template), dags=[path, ...])   # a file copy
    run = env.dags_test("xcs_roundtrip")
    run.assert_success()
    env.xcom_value("xcs_roundtrip", run.run_id, "make_scalar")

On PostgreSQL the template is a migrated database (``migrate_postgres_template``) and every
env gets ``CREATE DATABASE ... TEMPLATE`` of it (instant).

Every ``airflow`` and ``xcomstash`` command of an env runs in a child forked from a server that
has imported Airflow (and, once a ``dags test`` needs it, built its in-process execution API):
tests/harness/airflow_runner.py. Each command is still a process of its own that starts from
what a new process would have after its imports; the costliest part of a small ``dags test``
(imports, the execution API's versioned routes) is paid once per server instead of per
command, and installations that differ only in where they live share a server (see "Shared
servers" below), so a test process pays it about once per kind of installation.

``airflow dags test`` runs every task in-process (Airflow's in-process test supervisor, same
execution API, same XCom backend calls as a worker), so its output is the task logs; they are
cut per task at the ``[DAG TEST] starting/end task`` lines.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import itertools
import json
import os
import re
import resource
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Protocol

from xcomstash.coordinate import parse_link_key

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_BIN = Path(sys.executable).with_name("airflow")

XCOMSTASH_BACKEND = "xcomstash.airflow.backend.XComStashBackend"
COMMON_IO_BACKEND = "airflow.providers.common.io.xcom.backend.XComObjectStorageBackend"
#: The marker key of an xcomstash reference.
MARKER = "__xcomstash__"
#: The xcomstash CLI, run with an env's configuration.
CLI = "import sys\nfrom xcomstash.cli import main\nsys.exit(main(sys.argv[1:]))"
#: The fork server every ``airflow`` / ``xcomstash`` command of an env runs under.
RUNNER = Path(__file__).with_name("airflow_runner.py")
#: Variables a command may set on top of its fork server's environment, because they are read
#: when used, after the fork: xcomstash builds its engine from ``[xcomstash]`` in each process;
#: the common.io backend reads ``[common.io]`` on first use; Airflow's environment secrets
#: backend reads ``AIRFLOW_CONN_*`` / ``AIRFLOW_VAR_*`` at each lookup; the test DAGs read
#: ``XCS_*`` when parsed; ``xcomstash migrate`` reads ``XCOMSTASH_MIGRATE_FAULT``; pytest names
#: the current test in ``PYTEST_CURRENT_TEST``. Any other difference (the XCom backend class,
#: the database, ...) gets a server of its own.
LAZY_PREFIXES = (
    "AIRFLOW__XCOMSTASH__", "AIRFLOW__COMMON_IO__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "XCOMSTASH_",
    "XCS_", "PYTEST_",
)
#: Fork servers kept alive per test process (each holds an imported Airflow, ~300 MB): the
#: least recently used beyond this are closed. Five: with three, a whole-suite run closed ten
#: servers to make room that a later file then started again (about 16 CPU s each); three
#: workers at five servers each hold about 4.5 GB, on machines of 24 GB.
MAX_SERVERS = 5

DEFAULT_TIMEOUT_S = 300

_TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(\S+) map_index=(-?\d+)")
_TASK_END = re.compile(r"\[DAG TEST\] end task task_id=(\S+) map_index=(-?\d+)")


#: Set to a file path to have every command the harness runs appended to it as a JSON line
#: (what ran, wall seconds, CPU seconds): how the suite's cost is counted.
COMMAND_LOG_VAR = "XCS_TEST_COMMAND_LOG"


def record_command(
    argv: list[str], seconds: float, cpu: float | None, commands: int = 1, **extra: Any
) -> None:
    """Append one line to the command log, if ``XCS_TEST_COMMAND_LOG`` names one.

    ``cpu`` is the child's user + system CPU seconds (None where unknown, e.g. a server
    stopped later); ``commands`` is how many CLI commands the process ran."""
    path = os.environ.get(COMMAND_LOG_VAR)
    if not path:
        return
    line = json.dumps({
        "argv": [Path(argv[0]).name, *argv[1:4]], "seconds": round(seconds, 2),
        "cpu": None if cpu is None else round(cpu, 2), "commands": commands,
        "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "pid": os.getpid(), **extra,
    })
    with open(path, "a") as f:
        f.write(line + "\n")


def _current_test_file() -> str:
    """The file of the test running now ("" outside a test)."""
    return os.environ.get("PYTEST_CURRENT_TEST", "").split("::", 1)[0]


def children_cpu() -> float:
    """User + system CPU seconds of this process's waited-for children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def airflow_installed() -> bool:
    return AIRFLOW_BIN.exists()


def clean_environ(*, drop_prefixes: tuple[str, ...] = ()) -> dict[str, str]:
    """This process's environment without any Airflow settings that could leak into a test
    (and without variables starting with ``drop_prefixes``).

    ``PYTHONDONTWRITEBYTECODE`` is dropped too: every Airflow command is a fresh interpreter
    that imports Airflow, SQLAlchemy, pandas, ...; without cached bytecode each one compiles
    them all again (3-4 s of CPU per process). With it dropped the first process writes the
    ``__pycache__`` files and the others load them.
    """
    prefixes = ("AIRFLOW_", "AIRFLOW__", "_AIRFLOW", *drop_prefixes)
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(prefixes) and k not in ("AIRFLOW_HOME", "PYTHONDONTWRITEBYTECODE")
    }


def migrate(home: Path, database_url: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """``airflow db migrate`` of ``database_url`` (an empty DAG folder, no examples)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dags").mkdir(exist_ok=True)
    env = clean_environ()
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=database_url,
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
    )
    started, cpu = time.perf_counter(), children_cpu()
    proc = subprocess.run(
        [str(AIRFLOW_BIN), "db", "migrate"], env=env, capture_output=True, text=True, timeout=timeout
    )
    record_command([str(AIRFLOW_BIN), "db", "migrate"], time.perf_counter() - started, children_cpu() - cpu)
    (home / "db-migrate.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(
            f"airflow db migrate of {database_url} failed ({proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )


# ------------------------------------------------------------------- migrated templates


class DatabaseTemplate(Protocol):
    def instantiate(self, directory: Path) -> str:
        """A new metadata database, already migrated; returns its SQLAlchemy URL."""


@dataclass
class SqliteTemplate:
    """A migrated SQLite file: each env gets a copy of it."""

    path: Path

    def instantiate(self, directory: Path) -> str:
        target = directory / "airflow.db"
        shutil.copyfile(self.path, target)
        return f"sqlite:///{target}"


def migrate_sqlite_template(directory: Path) -> SqliteTemplate:
    """``airflow db migrate`` once into ``directory/airflow.db``."""
    db = directory / "airflow.db"
    migrate(directory, f"sqlite:///{db}")
    if not db.exists():
        raise RuntimeError(f"airflow db migrate left no {db}")
    return SqliteTemplate(db)


@dataclass
class PostgresTemplate:
    """A migrated database on a PostgreSQL server: each env gets ``CREATE DATABASE ...
    TEMPLATE`` of it (PostgreSQL copies the files; nobody may be connected to the template)."""

    server: Any  # tests.harness.servers.PostgresServer
    template: str

    def instantiate(self, directory: Path | None = None) -> str:
        return self.server.create_database(f"af_{uuid.uuid4().hex[:12]}", template=self.template)

    clone = instantiate


def migrate_postgres_template(server: Any, workdir: Path, name: str = "af_template") -> PostgresTemplate:
    migrate(workdir, server.create_database(name))
    return PostgresTemplate(server, name)


# -------------------------------------------------------------------------- command results


@dataclass
class CommandResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def task_logs(self, task_id: str, map_index: int = -1) -> list[str]:
        """The log of each try of one task instance, in order (empty if it never ran)."""
        blocks: list[str] = []
        current: list[str] | None = None
        for line in self.stdout.splitlines():
            start = _TASK_START.search(line)
            if start and start.group(1) == task_id and int(start.group(2)) == map_index:
                current = [line]
                continue
            if current is not None:
                current.append(line)
                end = _TASK_END.search(line)
                if end and end.group(1) == task_id and int(end.group(2)) == map_index:
                    blocks.append("\n".join(current))
                    current = None
        if current is not None:
            blocks.append("\n".join(current))
        return blocks

    def task_log(self, task_id: str, map_index: int = -1) -> str:
        """All tries of one task instance, one after another."""
        return "\n".join(self.task_logs(task_id, map_index))

    def describe(self, limit: int = 6000) -> str:
        return (
            f"$ {' '.join(self.args)}\n(exit {self.returncode}, {self.seconds:.1f}s)\n"
            f"--- stdout (tail) ---\n{self.stdout[-limit:]}\n--- stderr (tail) ---\n{self.stderr[-limit:]}"
        )

    def assert_ok(self) -> None:
        assert self.returncode == 0, self.describe()


@dataclass
class TaskInstance:
    task_id: str
    map_index: int
    state: str | None
    try_number: int


@dataclass
class DagRunResult(CommandResult):
    """``airflow dags test`` (or ``tasks test``) and the DAG run it left in the database."""

    dag_id: str = ""
    run_id: str = ""
    state: str | None = None
    logical_date: str | None = None
    tasks: dict[tuple[str, int], TaskInstance] = field(default_factory=dict)

    def task_state(self, task_id: str, map_index: int = -1) -> str | None:
        ti = self.tasks.get((task_id, map_index))
        return ti.state if ti else None

    def failed_tasks(self) -> list[str]:
        return sorted(f"{t}[{m}]" if m >= 0 else t for (t, m), ti in self.tasks.items() if ti.state != "success")

    def assert_success(self) -> None:
        if self.state == "success" and self.returncode == 0:
            return
        logs = "\n".join(
            f"===== {t} map_index={m} ({ti.state}) =====\n{self.task_log(t, m)[-5000:]}"
            for (t, m), ti in sorted(self.tasks.items())
            if ti.state != "success"
        )
        raise AssertionError(
            f"DAG run {self.dag_id}/{self.run_id} ended {self.state!r} (exit {self.returncode}); "
            f"not successful: {self.failed_tasks()}\n{logs}\n{self.describe(3000)}"
        )


# ------------------------------------------------------------------------ the fork server


class AirflowProcess:
    """A fork server (tests/harness/airflow_runner.py) with one fixed environment: Airflow is
    imported once, and each ``airflow`` or ``xcomstash`` command runs in a child forked from
    it, as the script would, with the command's own lazily read variables on top."""

    def __init__(
        self, environ: Mapping[str, str], cwd: Path, log_path: Path, imports_to_stderr: bool = False
    ) -> None:
        """``imports_to_stderr``: Airflow is imported with ``sys.stdout`` pointing at stderr, as
        the ``xcomstash`` CLI imports it for a command that prints a JSON report."""
        self.environ = dict(environ)
        self.commands = 0
        #: Commands handed this server and not finished yet (a server in use is never evicted);
        #: commands from several threads run one after another.
        self.users = 0
        self._lock = threading.Lock()
        #: What each command cost: its child's CPU seconds, its argv and the test file that ran
        #: it (a server may serve several files).
        self.costs: list[tuple[float, list[str], str]] = []
        self.started_by = _current_test_file()
        #: Why the harness started this server (for the command log).
        self.why = ""
        #: Called after each command, under the command lock (a shared server's bookkeeping).
        self.after_command: Any = None
        self._log = open(log_path, "ab")
        self._cpu_before = children_cpu()
        self._started = time.perf_counter()
        self.popen = subprocess.Popen(
            [sys.executable, str(RUNNER), *(["--imports-to-stderr"] if imports_to_stderr else [])],
            env=self.environ, cwd=cwd, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, start_new_session=True,
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def run(
        self, args: list[str], stdout: Path, stderr: Path, timeout: float,
        program: str = "airflow", env: Mapping[str, str | None] | None = None,
        cwd: Path | None = None,
    ) -> int:
        """Run ``program *args`` in a forked child (``env``: variables set, or unset with None,
        on top of the server's; ``cwd``: its working directory, the server's if None); its
        output goes to the two files. Returns its exit code (negative for a signal)."""
        assert self.popen.stdin is not None
        self.commands += 1
        request = {"argv": list(args), "program": program, "env": dict(env or {}),
                   "stdout": str(stdout), "stderr": str(stderr), "cwd": str(cwd) if cwd else None}
        try:
            with self._lock:
                self.popen.stdin.write((json.dumps(request) + "\n").encode())
                self.popen.stdin.flush()
                reply = self._reply(args, timeout)
                if self.after_command is not None:
                    self.after_command()
        finally:
            with _SERVERS_LOCK:
                self.users = max(0, self.users - 1)
        if reply is None:  # the server itself died: report it as the command's failure
            code = self.popen.wait()
            with open(stderr, "a") as err:
                err.write(f"\n[harness] the fork server exited ({code}); see its log\n")
            return code if code else 1
        self.costs.append((round(reply["cpu"], 2), [program, *args[:2]], _current_test_file()))
        return int(reply["returncode"])

    def _reply(self, args: list[str], timeout: float) -> dict[str, Any] | None:
        assert self.popen.stdout is not None
        fd, data = self.popen.stdout.fileno(), b""
        deadline = time.monotonic() + timeout
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                self.kill()
                raise subprocess.TimeoutExpired(["airflow", *args], timeout)
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            data += chunk
        return json.loads(data)

    def close(self, timeout: float = 60) -> None:
        """End of input: the server exits; its cost (children included) goes to the log."""
        cpu = None
        if self.alive():
            assert self.popen.stdin is not None
            try:
                self.popen.stdin.close()
                farewell = self._reply(["(end of input)"], timeout)
                cpu = farewell["cpu"] if farewell else None
                self.popen.wait(timeout=timeout)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.kill()
        self.kill()
        self._log.close()
        record_command(
            [str(RUNNER)], time.perf_counter() - self._started,
            cpu if cpu is not None else children_cpu() - self._cpu_before,
            commands=self.commands, per_command=self.costs, started_by=self.started_by, why=self.why,
        )

    def kill(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.popen.wait()


# Shared servers. A fork server's cost is its imports and the execution API it builds (10-15 s
# of CPU), and the installations of a test process differ mostly in where they live. So a
# server does not see an installation's own paths: it is started, and reads Airflow's
# configuration, through a *slot*, a symlink of its own that the harness points at the
# installation whose command runs next (``AIRFLOW_HOME``, the database file, the DAG folder
# are all reached through it). Two installations whose environments differ only in their root
# directory share a server; any other difference (the XCom backend class, a PostgreSQL
# database, ...) still gets a server of its own. Each command gets the installation's real
# paths in its environment as well (read when used, as by a new process), starts in its
# directory, and with no directory listings cached. Airflow writes ``airflow.cfg`` (paths and
# generated secrets) into the home it is first imported with, if there is none: the first
# server of a test process writes it through its slot (so with the slot's paths), and that
# file, with each installation's own paths, is what every later installation gets before its
# first command (a new process there, an api-server, reads the same configuration as the
# server's commands). A server started on an installation that has one reads a copy of it
# with the slot's paths (``AIRFLOW_CONFIG``, a file beside the slot; unset for its commands),
# so what it holds in memory never names one installation's paths, and every server of the
# process starts from the same file: any server can host any installation (before, the second
# kind of server on an installation read that installation's own paths, and one whose
# ``airflow.cfg`` another kind had written could share no server). An installation with an
# ``airflow.cfg`` of another origin (written before the harness's first command there) gets
# servers of its own.

#: Every live fork server of this test process, least recently used first.
_SERVERS: "OrderedDict[int, _SharedServer]" = OrderedDict()
_SLOTS: dict[str, Path] = {}


@dataclass
class _SharedServer:
    """A fork server, the slot it sees installations through, and the installation it is
    pointed at."""

    key: frozenset[tuple[str, str]]
    slot: Path
    process: AirflowProcess | None = None
    root: Path | None = None
    #: The ``airflow.cfg`` the server read, with the slot's path where an installation's goes.
    cfg: str | None = None

    @property
    def config(self) -> Path:
        """The server's own ``airflow.cfg`` (its ``AIRFLOW_CONFIG``), with the slot's paths."""
        return self.slot.with_name(self.slot.name + ".cfg")

    @property
    def users(self) -> int:
        return self.process.users if self.process else 0

    def can_host(self, owner: AirflowEnv) -> bool:
        path = owner.home / "airflow.cfg"
        return not path.exists() or (self.cfg is not None and path.read_text() == self._cfg_for(owner.root))

    def point_at(self, owner: AirflowEnv) -> None:
        """Point the slot at ``owner`` (no command of this server is running)."""
        if self.root != owner.root:
            link = self.slot.with_name(self.slot.name + ".new")
            link.unlink(missing_ok=True)
            link.symlink_to(owner.root, target_is_directory=True)
            os.replace(link, self.slot)
            self.root = owner.root
        self.sync_cfg()

    def sync_cfg(self) -> None:
        """Learn the ``airflow.cfg`` the server wrote (after its first command; the first one of
        this test process is every later installation's) and give the installation it points
        at its copy, with the installation's own paths."""
        global _CFG_TEMPLATE
        assert self.root is not None
        path = self.root / "home" / "airflow.cfg"
        if self.cfg is None:  # the server wrote it, through its slot, as it was imported
            if not path.exists():
                return
            self.cfg = path.read_text().replace(str(self.root), str(self.slot))
            if _CFG_TEMPLATE is None:
                _CFG_TEMPLATE = self.cfg.replace(str(self.slot), _SLOT_MARK)
        want = self._cfg_for(self.root)
        if not path.exists() or path.read_text() != want:
            path.write_text(want)

    def _cfg_for(self, root: Path) -> str:
        assert self.cfg is not None
        return self.cfg.replace(str(self.slot), str(root))

    def close(self) -> None:
        if self.process is not None:
            self.process.close()
        self.slot.unlink(missing_ok=True)
        self.config.unlink(missing_ok=True)


#: The ``airflow.cfg`` the first server of this test process wrote, its slot's path as
#: ``_SLOT_MARK``: what every installation gets before its first command (see above).
_CFG_TEMPLATE: str | None = None


def _give_cfg(owner: AirflowEnv) -> None:
    """Give an installation without an ``airflow.cfg`` this process's, with its own paths."""
    path = owner.home / "airflow.cfg"
    if _CFG_TEMPLATE is not None and not path.exists():
        path.write_text(_CFG_TEMPLATE.replace(_SLOT_MARK, str(owner.root)))
        path.chmod(0o600)  # as Airflow leaves the file it writes


def close_servers() -> None:
    """Close every fork server (end of the session)."""
    while _SERVERS:
        _, server = _SERVERS.popitem(last=False)
        server.close()
    for directory in _SLOTS.values():
        shutil.rmtree(directory, ignore_errors=True)
    _SLOTS.clear()


_SERVERS_LOCK = threading.Lock()
atexit.register(close_servers)


def _slot_dir() -> Path:
    """This process's directory of slots (short: its path ends up in SQLite URLs and logs)."""
    pid = str(os.getpid())
    if pid not in _SLOTS:
        _SLOTS[pid] = Path(tempfile.mkdtemp(prefix="xcs-slots-"))
    return _SLOTS[pid]


def split_environ(environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str | None]]:
    """A command's environment as (what its fork server starts with, what the command sets
    on top): the lazily read variables go with the command."""
    fixed = {k: v for k, v in environ.items() if not k.startswith(LAZY_PREFIXES)}
    lazy: dict[str, str | None] = {k: v for k, v in environ.items() if k.startswith(LAZY_PREFIXES)}
    return fixed, lazy


def json_report(args: Iterable[str]) -> bool:
    """Whether ``xcomstash ARGS`` prints a JSON report (``--json``, or a command whose report
    is JSON): the CLI then imports Airflow with stdout redirected to stderr."""
    from xcomstash.cli import build_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            parsed = build_parser().parse_args(list(args))
    except SystemExit:  # a usage error: the CLI fails before importing anything
        return False
    return bool(getattr(parsed, "json", False) or getattr(parsed, "json_output", False))


_SLOT_MARK = "\0slot\0"


def _server_for(
    owner: AirflowEnv, environ: Mapping[str, str], imports_to_stderr: bool = False
) -> tuple[AirflowProcess, dict[str, str | None]]:
    """The fork server for this env and environment (started if need be, pointed at the env)
    and the variables a command sets on top of it: every lazily read one (the server starts
    without them), and the env's own paths."""
    fixed, lazy = split_environ(environ)
    root = str(owner.root)
    shape = {k: v.replace(root, _SLOT_MARK) for k, v in fixed.items()}
    lazy.update({k: fixed[k] for k, v in shape.items() if v != fixed[k]})
    if "AIRFLOW_CONFIG" not in fixed:
        lazy["AIRFLOW_CONFIG"] = None  # the server's own copy, if it reads one, is not the command's
    # The handle's tag is part of the key: a second handle (``server_tag``) runs commands
    # beside the first one's.
    key = frozenset([*shape.items(), ("(imports to stderr)", str(imports_to_stderr)),
                     ("(handle)", owner.server_tag)])
    with _SERVERS_LOCK:
        _give_cfg(owner)
        for ident, candidate in list(_SERVERS.items()):
            if candidate.process is not None and not candidate.process.alive() and not candidate.users:
                del _SERVERS[ident]
                candidate.close()
        mine = [s for s in _SERVERS.values() if s.key == key]
        # This env's own server first (even if busy: its commands run one after another), else
        # an idle one of the same shape: one whose command is running may not be re-pointed.
        server = next((s for s in mine if s.root == owner.root), None) or next(
            (s for s in mine if not s.users and s.can_host(owner)), None
        )
        if server is None:
            why = _why_new_server(owner, key, mine)
            idle = [k for k, s in _SERVERS.items() if not s.users]
            for old_key in idle[: max(0, len(_SERVERS) + 1 - MAX_SERVERS)]:
                evicted = _SERVERS.pop(old_key)
                _EVICTED.add(evicted.key)
                evicted.close()
            slot = _slot_dir() / f"s{next(_SLOT_NUMBERS)}"
            server = _SharedServer(key, slot)
            server_environ = {k: v.replace(_SLOT_MARK, str(slot)) for k, v in shape.items()}
            own_cfg = owner.home / "airflow.cfg"
            if own_cfg.exists() and "AIRFLOW_CONFIG" not in server_environ:
                # The server reads a copy of it with its slot's paths (a new server finds none
                # only before this process's first one has written it).
                server.cfg = own_cfg.read_text().replace(root, str(slot))
                server.config.write_text(server.cfg)
                server.config.chmod(0o600)
                server_environ["AIRFLOW_CONFIG"] = str(server.config)
            server.point_at(owner)
            server.process = AirflowProcess(
                server_environ, owner.root, owner.logs / "fork-server.log", imports_to_stderr,
            )
            server.process.after_command = server.sync_cfg
            server.process.why = why
            _SERVERS[id(server)] = server
        elif not server.users:
            server.point_at(owner)
        _SERVERS.move_to_end(id(server))
        assert server.process is not None
        server.process.users += 1  # until its command has run: not re-pointed or evicted meanwhile
    return server.process, lazy


_SLOT_NUMBERS = itertools.count()
#: Kinds of server closed to make room for another (for the command log).
_EVICTED: set[frozenset[tuple[str, str]]] = set()


def _why_new_server(owner: AirflowEnv, key: frozenset[tuple[str, str]], mine: list[_SharedServer]) -> str:
    """Why a command needs a server of its own (for the command log: how the suite's cost is
    counted)."""
    if mine:
        return "same kind busy" if all(s.users for s in mine) else "airflow.cfg of another origin"
    if key in _EVICTED:
        return "its kind's server was closed to make room"
    if not _SERVERS:
        return "first"
    nearest = min(_SERVERS.values(), key=lambda s: len(s.key ^ key))
    names = sorted({name for name, _ in nearest.key ^ key})
    return "differs in " + ", ".join(names)


# ------------------------------------------------------------------------------- environment


@dataclass
class XComRow:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    key: str
    value: Any  # decoded from the JSON column

    @property
    def is_reference(self) -> bool:
        return isinstance(self.value, dict) and MARKER in self.value


class AirflowEnv:
    """One private Airflow installation: home, metadata database (a copy of a migrated
    template, SQLite or PostgreSQL), DAG folder, xcomstash store and trace file, and the
    environment every command gets."""

    def __init__(self, root: Path, template: DatabaseTemplate, dags: Iterable[Path] = ()) -> None:
        self.root = root
        self.home = root / "home"
        self.dags_folder = root / "dags"
        self.store = root / "store"
        self.trace_file = root / "trace.jsonl"
        self.cache_dir = root / "cache"
        self.logs = root / "commands"
        for d in (self.home, self.dags_folder, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.database_url = template.instantiate(self.home)
        self.database = "sqlite" if self.database_url.startswith("sqlite:") else "postgres"
        self.db_path = Path(self.database_url[len("sqlite:///"):]) if self.database == "sqlite" else None
        for path in dags:
            shutil.copy(path, self.dags_folder / Path(path).name)
        #: Settings every command gets; tests change them (e.g. to switch XCom backends).
        self.config: dict[str, str] = {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__XCOM_BACKEND": XCOMSTASH_BACKEND,
            "AIRFLOW__XCOMSTASH__STORE_URL": f"file://{self.store}",
            "AIRFLOW__XCOMSTASH__TRACE_FILE": str(self.trace_file),
            "AIRFLOW__XCOMSTASH__CACHE_DIR": str(self.cache_dir),
            # Test S3 servers (SeaweedFS) serve plain HTTP on 127.0.0.1: allow loopback HTTP.
            "AIRFLOW__XCOMSTASH__ALLOW_HTTP_ENDPOINTS": "True",
            # The DAG files import their shared helpers from their own folder.
            "PYTHONPATH": os.pathsep.join([str(self.dags_folder), str(REPO / "src")]),
        }
        self._count = 0
        #: Commands of handles with different tags run in different fork servers, so two
        #: handles of one installation may run commands at the same time (from two threads).
        self.server_tag = ""
        #: Set inside ``one_process()``: the overrides every command of the block runs with.
        self._one_overrides: dict[str, str | None] | None = None

    # ---------------------------------------------------------------- running commands

    @contextmanager
    def one_process(self, env: Mapping[str, str | None] | None = None) -> Iterator[AirflowEnv]:
        """Run every ``airflow`` command of the block (``dags_test``, ``tasks_test``,
        ``tasks_clear``, ``airflow``) with this environment plus ``env``; a command inside the
        block that asks for a different environment (``env=`` other than the block's) is an
        error. (Every command runs in a child of the env's fork server, inside a block or not;
        the block only fixes the environment of a series of commands.)"""
        if self._one_overrides is not None:
            raise RuntimeError("one_process() blocks do not nest")
        self._one_overrides = dict(env or {})
        try:
            yield self
        finally:
            self._one_overrides = None

    def environ(self, overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
        """The environment of a process of this installation (which finds this test process's
        ``airflow.cfg`` in its home, see "Shared servers" above)."""
        with _SERVERS_LOCK:
            _give_cfg(self)
        env = clean_environ()
        env.update(self.config)
        for k, v in (overrides or {}).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def airflow(
        self, *args: str, env: Mapping[str, str | None] | None = None, timeout: float = DEFAULT_TIMEOUT_S
    ) -> CommandResult:
        if self._one_overrides is not None:
            merged = {**self._one_overrides, **(env or {})}
            if self.environ(merged) != self.environ(self._one_overrides):
                raise ValueError(
                    f"airflow {' '.join(args[:3])}: inside one_process() every command runs with the "
                    "environment the block was opened with (pass the overrides to one_process())"
                )
            env = merged
        return self._run_forked("airflow", list(args), env, timeout)

    def python(
        self, code: str, *args: str, env: Mapping[str, str | None] | None = None, timeout: float = 120
    ) -> CommandResult:
        """Run Python code in a child process with this environment (Airflow importable there)."""
        return self._run([sys.executable, "-c", code, *args], env, timeout)

    def xcomstash(
        self, *args: str, env: Mapping[str, str | None] | None = None, timeout: float = DEFAULT_TIMEOUT_S
    ) -> CommandResult:
        """The ``xcomstash`` CLI with this installation's configuration."""
        return self._run_forked("xcomstash", list(args), env, timeout)

    def xcomstash_json(self, *args: str, expect: int = 0, **kwargs: Any) -> dict[str, Any]:
        result = self.xcomstash(*args, "--json", **kwargs)
        assert result.returncode == expect, result.describe()
        return json.loads(result.stdout)

    def _run(self, argv: list[str], env: Mapping[str, str | None] | None, timeout: float) -> CommandResult:
        self._count += 1
        started, cpu = time.perf_counter(), children_cpu()
        proc = subprocess.run(
            argv, env=self.environ(env), cwd=self.root, capture_output=True, text=True, timeout=timeout
        )
        result = CommandResult(argv, proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - started)
        record_command(argv, result.seconds, children_cpu() - cpu)
        what = "python" if argv[0] == sys.executable else "-".join(argv[1:3])
        name = f"{self._count:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', what)[:40]}"
        (self.logs / f"{name}.out").write_text(result.describe(limit=10**9))
        return result

    def _run_forked(
        self, program: str, args: list[str], env: Mapping[str, str | None] | None, timeout: float
    ) -> CommandResult:
        """``program *args`` in a child of this env's fork server for this environment."""
        server, lazy = _server_for(self, self.environ(env), program == "xcomstash" and json_report(args))
        with _SERVERS_LOCK:
            self._count += 1
            count = self._count
        name = f"{count:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', '-'.join([program, *args[:2]]))[:40]}"
        out, err = self.logs / f"{name}.stdout", self.logs / f"{name}.stderr"
        started = time.perf_counter()
        returncode = server.run(args, out, err, timeout, program=program, env=lazy, cwd=self.root)
        argv = [str(AIRFLOW_BIN), *args] if program == "airflow" else [sys.executable, "-c", CLI, *args]
        result = CommandResult(
            argv, returncode, out.read_text(errors="replace"), err.read_text(errors="replace"),
            time.perf_counter() - started,
        )
        (self.logs / f"{name}.out").write_text(result.describe(limit=10**9))
        return result

    def dags_test(
        self,
        dag_id: str,
        *,
        logical_date: str | None = None,
        conf: Mapping[str, Any] | None = None,
        env: Mapping[str, str | None] | None = None,
    ) -> DagRunResult:
        """``airflow dags test``: one whole DAG run. Note that Airflow 3.3 names the run after the
        wall clock (``manual__<now>``) even when a logical date is given, and deletes an earlier
        run of the same DAG with the same logical date (rows only: no XCom purge)."""
        args = ["dags", "test", dag_id]
        if logical_date:
            args.append(logical_date)
        if conf is not None:
            args += ["--conf", json.dumps(conf)]
        before = self._max_run_pk(dag_id)
        result = self.airflow(*args, env=env)
        run = self._latest_run(dag_id, newer_than=before)
        return self._with_run(result, dag_id, run)

    def tasks_test(
        self,
        dag_id: str,
        task_id: str,
        run_id: str,
        *,
        map_index: int | None = None,
        env: Mapping[str, str | None] | None = None,
    ) -> DagRunResult:
        """``airflow tasks test`` on an existing run: runs one task instance through the same
        in-process supervisor and execution API as ``dags test``."""
        args = ["tasks", "test", dag_id, task_id, run_id]
        if map_index is not None:
            args += ["--map-index", str(map_index)]
        result = self.airflow(*args, env=env)
        run = self.query("SELECT * FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id))
        return self._with_run(result, dag_id, run[0] if run else None)

    def tasks_clear(
        self, dag_id: str, task_filter: str, logical_date: str, *, downstream: bool = False
    ) -> CommandResult:
        """``airflow tasks clear --yes`` for the run with this logical date (given as both ends
        of the range). In 3.3.2 ``-t`` matches a *substring* of the task id, not the regex its
        help promises: ``^flaky$`` matches nothing."""
        args = ["tasks", "clear", "--yes", "-t", task_filter, "-s", logical_date, "-e", logical_date]
        if downstream:
            args.append("--downstream")
        result = self.airflow(*args, dag_id)
        result.assert_ok()
        return result

    def _with_run(self, result: CommandResult, dag_id: str, run: sqlite3.Row | None) -> DagRunResult:
        out = DagRunResult(**vars(result), dag_id=dag_id)
        if run is not None:
            out.run_id = run["run_id"]
            out.state = run["state"]
            out.logical_date = run["logical_date"]
            out.tasks = self.task_instances(dag_id, out.run_id)
        return out

    def _max_run_pk(self, dag_id: str) -> int:
        row = self.query("SELECT max(id) AS m FROM dag_run WHERE dag_id = ?", (dag_id,))
        return row[0]["m"] or 0

    def _latest_run(self, dag_id: str, newer_than: int) -> sqlite3.Row | None:
        rows = self.query(
            "SELECT * FROM dag_run WHERE dag_id = ? AND id > ? ORDER BY id DESC LIMIT 1", (dag_id, newer_than)
        )
        return rows[0] if rows else None

    # ---------------------------------------------------------------- the metadata database

    def connect(self) -> sqlite3.Connection:
        assert self.db_path is not None, "connect() is for SQLite; use query()/execute()"
        conn = sqlite3.connect(self.db_path, timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def _pg_dsn(self) -> str:
        return self.database_url.replace("postgresql+psycopg2://", "postgresql://", 1)

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """Rows as mappings (column name -> value); ``?`` placeholders on either database."""
        if self.database == "sqlite":
            with self.connect() as conn:
                return list(conn.execute(sql, tuple(params)))
        import psycopg2
        import psycopg2.extras

        with psycopg2.connect(self._pg_dsn()) as conn, conn.cursor(
            cursor_factory=psycopg2.extras.RealDictCursor
        ) as cur:
            cur.execute(sql.replace("?", "%s"), tuple(params))
            return list(cur.fetchall()) if cur.description else []

    def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run a statement on the metadata database (test set-up only: e.g. an XCom deleted
        in the UI is a plain row delete); returns the row count."""
        if self.database == "sqlite":
            with self.connect() as conn:
                return conn.execute(sql, tuple(params)).rowcount
        import psycopg2

        with psycopg2.connect(self._pg_dsn()) as conn, conn.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), tuple(params))
            return cur.rowcount

    def task_instances(self, dag_id: str, run_id: str) -> dict[tuple[str, int], TaskInstance]:
        rows = self.query(
            "SELECT task_id, map_index, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
            (dag_id, run_id),
        )
        return {
            (r["task_id"], r["map_index"]): TaskInstance(r["task_id"], r["map_index"], r["state"], r["try_number"])
            for r in rows
        }

    def xcom_rows(
        self,
        dag_id: str | None = None,
        run_id: str | None = None,
        task_id: str | None = None,
        key: str | None = None,
    ) -> list[XComRow]:
        """Rows of the ``xcom`` table, values decoded as Airflow would decode the JSON column."""
        where, params = [], []
        for column, value in (("dag_id", dag_id), ("run_id", run_id), ("task_id", task_id), ("key", key)):
            if value is not None:
                where.append(f'"{column}" = ?')
                params.append(value)
        sql = 'SELECT dag_id, run_id, task_id, map_index, "key", value FROM xcom'
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += ' ORDER BY dag_id, run_id, task_id, map_index, "key"'
        return [
            XComRow(
                r["dag_id"], r["run_id"], r["task_id"], r["map_index"], r["key"],
                decode_column(r["value"]) if self.database == "sqlite" else decode_pg_column(r["value"]),
            )
            for r in self.query(sql, params)
        ]

    def xcom_value(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1
    ) -> Any:
        rows = [r for r in self.xcom_rows(dag_id, run_id, task_id, key) if r.map_index == map_index]
        assert len(rows) == 1, f"expected one xcom row for {dag_id}/{run_id}/{task_id}[{map_index}]/{key}, got {rows}"
        return rows[0].value

    def set_xcom_value(
        self, dag_id: str, run_id: str, task_id: str, key: str, value: Any, map_index: int = -1
    ) -> None:
        """Overwrite what one existing xcom row holds (the JSON text Airflow would write)."""
        count = self.execute(
            'UPDATE xcom SET value = ? WHERE dag_id = ? AND run_id = ? AND task_id = ? AND "key" = ? '
            "AND map_index = ?",
            (json.dumps(value), dag_id, run_id, task_id, key, map_index),
        )
        assert count == 1, f"no xcom row {dag_id}/{run_id}/{task_id}[{map_index}]/{key}"

    def insert_xcom_row(
        self, dag_id: str, run_id: str, task_id: str, key: str, value: Any, map_index: int = -1
    ) -> None:
        """Add a row for an existing task instance of an existing run."""
        (run,) = self.query("SELECT id FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id))
        now = "datetime('now')" if self.database == "sqlite" else "now()"
        self.execute(
            'INSERT INTO xcom (dag_run_id, task_id, map_index, "key", dag_id, run_id, value, timestamp) '
            f"VALUES (?, ?, ?, ?, ?, ?, ?, {now})",
            (run["id"], task_id, map_index, key, dag_id, run_id, json.dumps(value)),
        )

    # ---------------------------------------------------------------- store and trace

    def store_objects(self, under: str = "") -> dict[str, int]:
        """Every file in the local store (relative path -> size), temporary files included,
        links (which only say which XComs use a blob) excluded."""
        return {k: v for k, v in self._store_files(under).items() if parse_link_key(k) is None}

    def store_links(self, under: str = "") -> set[str]:
        """The links in the local store: ``<dag>/<run>/.links/<task>/<map>/<key>/<digest>``."""
        return {k for k in self._store_files(under) if parse_link_key(k) is not None}

    def _store_files(self, under: str) -> dict[str, int]:
        base = self.store / under if under else self.store
        if not base.exists():
            return {}
        # The maintenance commands' run records (!maintenance/) are no values: left out.
        return {
            key: p.stat().st_size
            for p in sorted(base.rglob("*"))
            if p.is_file() and not (key := str(p.relative_to(self.store))).startswith("!maintenance/")
        }

    def store_files(self) -> dict[str, int]:
        """Every file in the local store, links included (key -> size)."""
        return self._store_files("")

    def store_keys(self) -> set[str]:
        """Every object and link in the local store, temporary upload files and the audit log
        (``!audit/``, written by maintenance commands too) and the maintenance records
        (``!maintenance/``) excluded."""
        return {
            k for k in self.store_files()
            if not k.rsplit("/", 1)[-1].startswith(".tmp-") and not k.startswith(("!audit/", "!maintenance/"))
        }

    def referenced_keys(self) -> set[str]:
        """The keys the xcom rows keep alive: each referenced object, and for content-addressed
        blobs the link of each row that references one."""
        from xcomstash.coordinate import XComCoordinate

        prefix = f"file://{self.store.resolve()}/"
        keys: set[str] = set()
        for row in self.xcom_rows():
            if not row.is_reference:
                continue
            uri = row.value["uri"]
            assert uri.startswith(prefix), uri
            key = uri[len(prefix):]
            keys.add(key)
            if "/.blobs/" in key:
                coordinate = XComCoordinate(row.dag_id, row.run_id, row.task_id, row.map_index, row.key)
                keys.add(coordinate.link_key(row.value["digest"]))
        return keys

    def object_path(self, reference: Mapping[str, Any]) -> Path:
        """The file an xcomstash reference (a row value) points at in the local store."""
        uri = reference["uri"]
        assert uri.startswith("file://"), uri
        path = Path(uri[len("file://") :])
        assert self.store in path.parents, (path, self.store)
        return path

    def trace(self, op: str | None = None) -> list[dict[str, Any]]:
        if not self.trace_file.exists():
            return []
        events = [json.loads(line) for line in self.trace_file.read_text().splitlines() if line.strip()]
        return [e for e in events if op is None or e["op"] == op]


def decode_column(raw: Any) -> Any:
    """SQLite gives JSON text back as ``str``, but numeric JSON (``7``, ``0.25``) as numbers:
    the column's declared type ``JSON`` has numeric affinity."""
    if isinstance(raw, bytes):
        raw = raw.decode()
    if isinstance(raw, str):
        return json.loads(raw)
    return raw


def decode_pg_column(raw: Any) -> Any:
    """psycopg2 hands PostgreSQL's JSON column back decoded, so a JSON string value comes back
    as ``str``; Airflow may also keep JSON text in the column (decoded here). A string that is
    not JSON text is the value itself."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


_EXCEPTION_LINE = re.compile(r"^((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception)): (.*)$")


def raised_exceptions(log: str) -> list[tuple[str, str]]:
    """``(qualified class name, message)`` of each exception line of the tracebacks in a log,
    in order: the last one is what the task finally failed with."""
    return [(m.group(1), m.group(2)) for m in map(_EXCEPTION_LINE.match, log.splitlines()) if m]


def read_stored_value(env: AirflowEnv, reference: Mapping[str, Any]) -> Any:
    """Decode an object of the env's local store with the engine alone (no Airflow)."""
    from xcomstash import Engine, StashConfig

    engine = Engine(StashConfig(store_url=f"file://{env.store}", read_ahead=False))
    return engine.deserialize(dict(reference))
