"""Run real Airflow CLI commands against a private AIRFLOW_HOME, and look at what they left.

Nothing here imports Airflow: Airflow reads its configuration once per process from
``AIRFLOW_HOME``, so every Airflow command runs in a child process with its own environment.
The pytest process only reads the results: the SQLite metadata database (with ``sqlite3``),
the object store directory, the xcomstash trace file and the command's output.

    env = AirflowEnv(root, template_db, dags=["xcs_roundtrip.py"])   # or make_airflow_env(...)
    run = env.dags_test("xcs_roundtrip")
    run.assert_success()
    env.xcom_value("xcs_roundtrip", run.run_id, "make_scalar")

``airflow dags test`` runs every task in-process (Airflow's in-process test supervisor, same
execution API, same XCom backend calls as a worker), so its output is the task logs; they are
cut per task at the ``[DAG TEST] starting/end task`` lines.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

HERE = Path(__file__).resolve().parent
DAGS_SOURCE = HERE / "dags"
REPO = HERE.parents[1]
AIRFLOW_BIN = Path(sys.executable).with_name("airflow")

XCOMSTASH_BACKEND = "xcomstash.airflow.backend.XComStashBackend"
COMMON_IO_BACKEND = "airflow.providers.common.io.xcom.backend.XComObjectStorageBackend"
#: Shared by every test DAG (expected values and digests); always copied next to the DAGs.
SHARED_DAG_MODULES = ("xcs_values.py",)
#: The marker key of an xcomstash reference.
MARKER = "__xcomstash__"

DEFAULT_TIMEOUT_S = 300

_TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(\S+) map_index=(-?\d+)")
_TASK_END = re.compile(r"\[DAG TEST\] end task task_id=(\S+) map_index=(-?\d+)")


def clean_environ() -> dict[str, str]:
    """This process's environment without any Airflow settings that could leak into a test."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW_", "AIRFLOW__", "_AIRFLOW")) and k != "AIRFLOW_HOME"
    }


def migrate_template(directory: Path) -> Path:
    """``airflow db migrate`` once into ``directory/airflow.db``; tests copy that file."""
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "airflow.db"
    env = clean_environ()
    env.update(
        AIRFLOW_HOME=str(directory),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{db}",
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(directory / "dags"),
    )
    (directory / "dags").mkdir(exist_ok=True)
    proc = subprocess.run(
        [str(AIRFLOW_BIN), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEFAULT_TIMEOUT_S,
    )
    if proc.returncode != 0 or not db.exists():
        raise RuntimeError(f"airflow db migrate failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return db


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
    """One private Airflow installation: home, SQLite DB (a copy of the migrated template),
    DAG folder, xcomstash store and trace file, and the environment every command gets."""

    def __init__(self, root: Path, template_db: Path, dags: Iterable[str] = ()) -> None:
        self.root = root
        self.home = root / "home"
        self.dags_folder = root / "dags"
        self.store = root / "store"
        self.trace_file = root / "trace.jsonl"
        self.cache_dir = root / "cache"
        self.db_path = self.home / "airflow.db"
        self.logs = root / "commands"
        for d in (self.home, self.dags_folder, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template_db, self.db_path)
        for name in (*SHARED_DAG_MODULES, *dags):
            shutil.copy(DAGS_SOURCE / name, self.dags_folder / name)
        #: Settings every command gets; tests change them (e.g. to switch XCom backends).
        self.config: dict[str, str] = {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db_path}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__XCOM_BACKEND": XCOMSTASH_BACKEND,
            "AIRFLOW__XCOMSTASH__STORE_URL": f"file://{self.store}",
            "AIRFLOW__XCOMSTASH__TRACE_FILE": str(self.trace_file),
            "AIRFLOW__XCOMSTASH__CACHE_DIR": str(self.cache_dir),
            # Test S3 servers (SeaweedFS) serve plain HTTP on 127.0.0.1: allow loopback HTTP.
            "AIRFLOW__XCOMSTASH__ALLOW_HTTP_ENDPOINTS": "True",
            # The DAG files import xcs_values from their own folder.
            "PYTHONPATH": os.pathsep.join([str(self.dags_folder), str(REPO / "src")]),
        }
        self._count = 0

    # ---------------------------------------------------------------- running commands

    def environ(self, overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
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
        return self._run([str(AIRFLOW_BIN), *args], env, timeout)

    def python(
        self, code: str, *args: str, env: Mapping[str, str | None] | None = None, timeout: float = 120
    ) -> CommandResult:
        """Run Python code in a child process with this environment (Airflow importable there)."""
        return self._run([sys.executable, "-c", code, *args], env, timeout)

    def _run(self, argv: list[str], env: Mapping[str, str | None] | None, timeout: float) -> CommandResult:
        self._count += 1
        started = time.perf_counter()
        proc = subprocess.run(
            argv, env=self.environ(env), cwd=self.root, capture_output=True, text=True, timeout=timeout
        )
        result = CommandResult(argv, proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - started)
        what = "python" if argv[0] == sys.executable else "-".join(argv[1:3])
        name = f"{self._count:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', what)[:40]}"
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
        conn = sqlite3.connect(self.db_path, timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self.connect() as conn:
            return list(conn.execute(sql, tuple(params)))

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
            XComRow(r["dag_id"], r["run_id"], r["task_id"], r["map_index"], r["key"], decode_column(r["value"]))
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
        with self.connect() as conn:
            cur = conn.execute(
                'UPDATE xcom SET value = ? WHERE dag_id = ? AND run_id = ? AND task_id = ? AND "key" = ? '
                "AND map_index = ?",
                (json.dumps(value), dag_id, run_id, task_id, key, map_index),
            )
            assert cur.rowcount == 1, f"no xcom row {dag_id}/{run_id}/{task_id}[{map_index}]/{key}"

    def insert_xcom_row(
        self, dag_id: str, run_id: str, task_id: str, key: str, value: Any, map_index: int = -1
    ) -> None:
        """Add a row for an existing task instance of an existing run."""
        with self.connect() as conn:
            (dag_run_pk,) = conn.execute(
                "SELECT id FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
            ).fetchone()
            conn.execute(
                'INSERT INTO xcom (dag_run_id, task_id, map_index, "key", dag_id, run_id, value, timestamp) '
                "VALUES (?, ?, ?, ?, ?, ?, ?, datetime('now'))",
                (dag_run_pk, task_id, map_index, key, dag_id, run_id, json.dumps(value)),
            )

    # ---------------------------------------------------------------- store and trace

    def store_objects(self, under: str = "") -> dict[str, int]:
        """Every file in the local store (relative path -> size), temporary files included,
        links (which only say which XComs use a blob) excluded."""
        return {k: v for k, v in self._store_files(under).items() if "/.links/" not in f"/{k}"}

    def store_links(self, under: str = "") -> set[str]:
        """The links in the local store: ``<dag>/<run>/.links/<task>/<map>/<key>/<digest>``."""
        return {k for k in self._store_files(under) if "/.links/" in f"/{k}"}

    def _store_files(self, under: str) -> dict[str, int]:
        base = self.store / under if under else self.store
        if not base.exists():
            return {}
        return {
            str(p.relative_to(self.store)): p.stat().st_size for p in sorted(base.rglob("*")) if p.is_file()
        }

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


_EXCEPTION_LINE = re.compile(r"^((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception)): (.*)$")


def raised_exceptions(log: str) -> list[tuple[str, str]]:
    """``(qualified class name, message)`` of each exception line of the tracebacks in a log,
    in order: the last one is what the task finally failed with."""
    return [(m.group(1), m.group(2)) for m in map(_EXCEPTION_LINE.match, log.splitlines()) if m]


def dag_values_module() -> Any:
    """``xcs_values`` (the DAGs' expected values), imported here without touching sys.path."""
    import importlib.util

    name = "xcs_values_for_tests"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DAGS_SOURCE / "xcs_values.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def read_stored_value(env: AirflowEnv, reference: Mapping[str, Any]) -> Any:
    """Decode an object of the env's local store with the engine alone (no Airflow)."""
    from xcomstash import Engine, StashConfig

    engine = Engine(StashConfig(store_url=f"file://{env.store}", read_ahead=False))
    return engine.deserialize(dict(reference))
