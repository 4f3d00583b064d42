"""A real Airflow deployment on loopback: PostgreSQL, SeaweedFS S3 (behind a fault proxy),
Redis for Celery, and the Airflow 3 processes, each started and stopped by process id.

    stack = Deployment(tmp, executor="local").start()
    run_id = stack.api.trigger("xd_workload", conf={...})
    run = stack.api.wait_run("xd_workload", run_id)
    stack.stop()

Nothing here imports Airflow: every Airflow process (and the verifier) is a child process with
the environment built in :meth:`Deployment.environ`; this process talks to them through the
REST API, the metadata database (psycopg2) and the store (boto3), exactly as an operator would.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from tests.harness.airflow import (
    AIRFLOW_BIN,
    REPO,
    XCOMSTASH_BACKEND,
    AirflowProcess,
    PostgresTemplate,
    airflow_installed,
    children_cpu,
    clean_environ as _clean_environ,
    migrate_postgres_template,
    record_command,
    split_environ,
)
from tests.harness.api import AirflowAPI
from tests.harness.processes import Process, spawn, stop_all
from tests.harness.proxy import TcpProxy
from tests.harness.servers import (
    LOOPBACK,
    PostgresServer,
    RedisServer,
    S3Server,
    free_port,
    restart_seaweedfs,
    start_postgres,
    start_redis,
    start_seaweedfs,
)

HERE = Path(__file__).resolve().parent
DAGS_SOURCE = HERE / "dags"
#: ``airflow_local_settings.py`` that imports what the tasks need once, in the processes the
#: task processes are forked from (see the module's docstring); not on the API server's path.
PRELOAD = HERE / "preload"
CONN_ID = "xcs_store"
BUCKET = "xcom"
PREFIX = "deploy"

#: botocore settings of the store connection (its ``config_kwargs`` extra): how long one S3
#: request may take and how often it is retried. The slow-store test checks these hold.
S3_CONNECT_TIMEOUT_S = 3
S3_READ_TIMEOUT_S = 3
S3_MAX_ATTEMPTS = 2


def clean_environ() -> dict[str, str]:
    """This process's environment minus anything Airflow- or AWS-related that could leak in."""
    return _clean_environ(drop_prefixes=("AWS_",))


class Deployment:
    """One deployment: servers, Airflow processes, their environment and logs."""

    def __init__(
        self,
        root: Path,
        *,
        executor: str = "local",
        workers: int = 2,
        worker_concurrency: int = 2,
        parallelism: int = 6,
        dags: Iterable[str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        database: PostgresTemplate | None = None,
    ) -> None:
        """``database``: a migrated template database on a running PostgreSQL server (the
        session's, see tests/harness/fixtures.py); the deployment gets a copy of it. Without
        one, the deployment starts a PostgreSQL server of its own and migrates it."""
        if executor not in ("local", "celery"):
            raise ValueError(f"executor must be 'local' or 'celery', got {executor!r}")
        self.root = Path(root)
        self.executor = executor
        self.n_workers = workers if executor == "celery" else 0
        self.worker_concurrency = worker_concurrency
        self.parallelism = parallelism
        self.home = self.root / "home"
        self.dags_folder = self.root / "dags"
        self.log_dir = self.root / "proc-logs"
        self.task_log_dir = self.root / "task-logs"
        self.shared = self.root / "shared"  # gates and pid files the test DAGs use
        self.dag_files = sorted(p.name for p in DAGS_SOURCE.glob("*.py")) if dags is None else [*dags, "xd_common.py"]
        self.extra_env = dict(extra_env or {})
        self.pg: PostgresServer | None = None
        self.database_url = ""
        self._template = database
        self._own_pg = database is None
        self.s3: S3Server | None = None
        self.redis: RedisServer | None = None
        self.proxy: TcpProxy | None = None
        self.processes: dict[str, Process] = {}
        self.api_port = 0
        self.api: AirflowAPI | None = None  # type: ignore[assignment]
        self._db: Any = None  # psycopg2 connection of query(), opened on first use
        self.timings: dict[str, float] = {}
        self._forks: dict[frozenset[tuple[str, str]], AirflowProcess] = {}
        self._fork_count = 0
        self._secret = secrets.token_urlsafe(32)
        self._fernet = _fernet_key()

    # ------------------------------------------------------------------ configuration

    @property
    def store_url(self) -> str:
        return f"s3://{CONN_ID}@{BUCKET}/{PREFIX}"

    def keyset_file(self) -> Path:
        """The deployment's keyset (0600), made on first use: what an operator provisions."""
        from xcomstash.security.crypto.keyset import Keyset, write_keyset_file

        path = self.root / "keyset.json"
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            write_keyset_file(path, Keyset.generate())
        return path

    def worker_cache_dir(self, index: int) -> Path:
        """The read cache of Celery worker ``index`` (LocalExecutor: index 0, the one machine)."""
        return self.root / f"cache-w{index}"

    def connection_json(self, endpoint_url: str) -> str:
        assert self.s3 is not None
        return json.dumps(
            {
                "conn_type": "aws",
                "login": self.s3.access_key,
                "password": self.s3.secret_key,
                "extra": {
                    "endpoint_url": endpoint_url,
                    "region_name": self.s3.region,
                    "config_kwargs": {
                        "connect_timeout": S3_CONNECT_TIMEOUT_S,
                        "read_timeout": S3_READ_TIMEOUT_S,
                        "retries": {"mode": "standard", "max_attempts": S3_MAX_ATTEMPTS},
                        "s3": {"addressing_style": "path"},
                    },
                },
            }
        )

    def environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        assert self.pg is not None and self.proxy is not None
        env = clean_environ()
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(self.parallelism * 2),
                "AIRFLOW__CORE__FERNET_KEY": self._fernet,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{LOOPBACK}:{self.api_port}/execution/",
                "AIRFLOW__API__HOST": LOOPBACK,
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": self._secret,
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.task_log_dir),
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                # The DAG files never change during a test: parse them once, not every 30 s
                # (re-parsing costs a good part of a core on a 2-core machine).
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
                # A task's calls to the execution API wait this long for the API server
                # (default 5 s): on a 2-core machine under load one slow answer must not fail
                # the task before it starts.
                "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
                # A task whose worker died is noticed after this long (default 300 s).
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
                "AIRFLOW__CORE__XCOM_BACKEND": XCOMSTASH_BACKEND,
                "AIRFLOW__XCOMSTASH__STORE_URL": self.store_url,
                # SeaweedFS (and the fault proxy) speak plain HTTP on loopback.
                "AIRFLOW__XCOMSTASH__ALLOW_HTTP_ENDPOINTS": "True",
                # A shared store needs keys every worker holds: references are signed with
                # this keyset (objects stay plaintext, so the checks can read them directly).
                "AIRFLOW__XCOMSTASH__KEYSETS": f"file:{self.keyset_file()}",
                "AIRFLOW__XCOMSTASH__ENCRYPT": "False",
                # Audit events to the task log and, durably, to the store (!audit/...).
                "AIRFLOW__XCOMSTASH__AUDIT": "log,store",
                "AIRFLOW__XCOMSTASH__CACHE_DIR": str(self.worker_cache_dir(0)),
                f"AIRFLOW_CONN_{CONN_ID.upper()}": self.connection_json(self.proxy.url),
                # The DAG files import their shared helpers from their own folder; the
                # scheduler, the workers and the verifier's fork server preload the libraries
                # the tasks import (PRELOAD).
                "PYTHONPATH": os.pathsep.join([str(PRELOAD), str(self.dags_folder), str(REPO / "src")]),
                "XD_SHARED": str(self.shared),
            }
        )
        if self.executor == "celery":
            assert self.redis is not None
            env.update(
                {
                    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                    "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
                    "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.database_url,
                    "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                }
            )
        else:
            env["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
        env.update(self.extra_env)
        env.update(extra or {})
        return env

    # ------------------------------------------------------------------ start / stop

    def start(self) -> Deployment:
        try:
            self._start()
        except BaseException:
            diagnostics = self.describe()
            self.stop()
            raise RuntimeError(f"deployment did not start:\n{diagnostics}") from None
        return self

    def _start(self) -> None:
        for d in (self.home, self.dags_folder, self.log_dir, self.task_log_dir, self.shared):
            d.mkdir(parents=True, exist_ok=True)
        for name in [*self.dag_files, ".airflowignore"]:
            shutil.copy(DAGS_SOURCE / name, self.dags_folder / name)
        t0 = time.monotonic()
        if self._template is None:  # a server of our own, migrated here
            self.pg = start_postgres(self.root / "pg")
            self._template = migrate_postgres_template(self.pg, self.root / "pg-migrate")
        self.pg = self._template.server
        self.database_url = self._template.clone()
        self.s3 = start_seaweedfs(self.root / "s3")
        self.proxy = TcpProxy(int(self.s3.endpoint_url.rsplit(":", 1)[1])).start()
        if self.executor == "celery":
            self.redis = start_redis(self.root / "redis")
        self.timings["servers_s"] = time.monotonic() - t0
        self.api_port = free_port()
        self.api = AirflowAPI(f"http://{LOOPBACK}:{self.api_port}", state_source=self.run_state_in_db)

        t0 = time.monotonic()
        # The API server runs no task: it starts without the preloaded libraries.
        self._spawn_airflow("api-server", ["api-server"],
                            env={"PYTHONPATH": os.pathsep.join([str(self.dags_folder), str(REPO / "src")])})
        self._spawn_airflow("scheduler", ["scheduler", "--skip-serve-logs"])
        self._spawn_airflow("dag-processor", ["dag-processor"])
        for i in range(self.n_workers):
            self.start_worker(i)
        self.api.wait_healthy(timeout=120, processes=self.processes.values())
        self.timings["api_ready_s"] = time.monotonic() - t0
        self.api.wait_dags(self._dag_ids(), timeout=180, processes=self.processes.values())
        self.timings["dags_parsed_s"] = time.monotonic() - t0

    def _dag_ids(self) -> list[str]:
        """DAG ids declared in the copied files (``dag_id="..."``), without importing them."""
        import re

        ids: list[str] = []
        for name in self.dag_files:
            ids += re.findall(r'dag_id="([^"]+)"', (self.dags_folder / name).read_text())
        return ids

    def _spawn_airflow(self, name: str, args: list[str], env: Mapping[str, str] | None = None) -> Process:
        proc = spawn(name, [str(AIRFLOW_BIN), *args], self.environ(env), self.log_dir, cwd=self.root)
        record_command(proc.argv, 0.0, None)
        self.processes[name] = proc
        return proc

    def start_worker(self, index: int) -> Process:
        """Celery worker ``index``: its own node name, pid file and xcomstash read cache, as if
        it ran on a machine of its own."""
        cache = self.worker_cache_dir(index)
        cache.mkdir(parents=True, exist_ok=True)
        name = f"worker{index}"
        old = self.processes.get(name)
        if old is not None and old.alive():
            raise RuntimeError(f"{name} is still running (pid {old.pid})")
        return self._spawn_airflow(
            name,
            [
                "celery", "worker", "--skip-serve-logs", "--without-gossip", "--without-mingle",
                "-c", str(self.worker_concurrency), "--celery-hostname", f"{name}@%h",
                "--pid", str(self.root / f"{name}.pid"),
            ],
            env={"AIRFLOW__XCOMSTASH__CACHE_DIR": str(cache), "XD_WORKER": name},
        )

    def stop(self) -> None:
        """Stop every process by pid (SIGTERM, then SIGKILL), then the servers."""
        for server in self._forks.values():
            server.close()
        self._forks.clear()
        if self._db is not None:
            self._db.close()
            self._db = None
        # The store and the broker stop while the Airflow processes do (each may take its
        # grace period): nothing is left that needs them.
        stoppers = [threading.Thread(target=_stop_quietly, args=(server,))
                    for server in (self.redis, self.s3) if server is not None]
        for stopper in stoppers:
            stopper.start()
        stop_all(self.processes.values())
        for stopper in stoppers:
            stopper.join()
        for server in (self.proxy, self.pg if self._own_pg else None):
            if server is not None:
                _stop_quietly(server)

    def describe(self, lines: int = 40) -> str:
        """Every process's log tail, for failure messages."""
        parts = [p.describe(lines) for p in self.processes.values()]
        if self.s3 is not None and self.s3.log_path is not None:
            parts.append(f"--- seaweedfs ---\n{self.s3.log_tail(lines // 2)}")
        if self.proxy is not None:
            parts.append(f"--- proxy --- {self.proxy.stats}")
        return "\n".join(parts)

    # ------------------------------------------------------------------ faults on the store

    def stop_s3(self) -> None:
        """Stop the S3 server (SIGTERM, then SIGKILL) and keep its data and ports."""
        assert self.s3 is not None
        self.s3.stop()

    def restart_s3(self, timeout: float = 60) -> None:
        """Start SeaweedFS again on the same ports with the same data directory."""
        assert self.s3 is not None and self.s3.log_path is not None
        restart_seaweedfs(self.s3, timeout=timeout)

    def s3_client(self, **config: Any) -> Any:
        """A boto3 client straight to the S3 server (not through the proxy)."""
        assert self.s3 is not None
        return self.s3.client(**config)

    # ------------------------------------------------------------------ helpers for tests

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one query of the metadata database (one autocommit connection, kept)."""
        import psycopg2

        if self._db is None or self._db.closed:
            self._db = psycopg2.connect(self.database_url.replace("postgresql+psycopg2://", "postgresql://", 1))
            self._db.autocommit = True
        with self._db.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def run_state_in_db(self, dag_id: str, run_id: str) -> str | None:
        """A DAG run's state in the metadata database: what waits watch (a query costs the
        API server nothing; the REST API still reads the finished run)."""
        rows = self.query("select state from dag_run where dag_id = %s and run_id = %s", (dag_id, run_id))
        return rows[0][0] if rows else None

    def tries_in_db(self, dag_id: str, run_id: str, task_id: str) -> dict[int, tuple[str | None, int]]:
        """map_index -> (state, try_number) of one task's instances in the metadata database."""
        rows = self.query(
            "select map_index, state, try_number from task_instance where dag_id = %s and run_id = %s"
            " and task_id = %s", (dag_id, run_id, task_id),
        )
        return {int(m): (state, int(tries)) for m, state, tries in rows}

    def python(self, code: str, *args: str, timeout: float = 300, env: Mapping[str, str] | None = None
               ) -> subprocess.CompletedProcess:
        """Run Python in a child with this deployment's environment (Airflow importable)."""
        return self._run_forked("python", [code, *args], self.environ(env), timeout)

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self._run([str(AIRFLOW_BIN), *args], self.environ(), timeout)

    def _run_forked(self, program: str, args: list[str], env: Mapping[str, str], timeout: float
                    ) -> subprocess.CompletedProcess:
        """``program args`` in a child of this deployment's fork server for the environment (one
        per environment, closed by :meth:`stop`): Airflow is imported once for the verifier
        and CLI runs, each still a process of its own (tests/harness/airflow_runner.py)."""
        fixed, lazy = split_environ(env)
        # A ``-c`` run of the xcomstash CLI with a JSON report imports Airflow with stdout
        # pointing at stderr (what the CLI does): so does its server. The verifier prints its
        # report as the last line of stdout, so it runs in that server too: one fork server
        # (one import of Airflow) per deployment, not two.
        quiet = program == "python"
        key = frozenset([*fixed.items(), ("(imports to stderr)", str(quiet))])
        server = self._forks.get(key)
        if server is None or not server.alive():
            server = self._forks[key] = AirflowProcess(fixed, self.root, self.log_dir / "fork-server.log", quiet)
        self._fork_count += 1
        out = self.log_dir / f"fork-{self._fork_count:02d}.stdout"
        err = self.log_dir / f"fork-{self._fork_count:02d}.stderr"
        code = server.run(args, out, err, timeout, program=program, env=lazy)
        return subprocess.CompletedProcess(
            [program, *args], code, out.read_text(errors="replace"), err.read_text(errors="replace")
        )

    def _run(self, argv: list[str], env: Mapping[str, str], timeout: float) -> subprocess.CompletedProcess:
        started, cpu = time.monotonic(), children_cpu()
        proc = subprocess.run(argv, env=env, cwd=self.root, capture_output=True, text=True, timeout=timeout)
        record_command(argv, time.monotonic() - started, children_cpu() - cpu)
        return proc


def _stop_quietly(server: Any) -> None:
    try:
        server.stop()
    except Exception:
        pass


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()
