"""Session fixtures of the real-server tiers (a pytest plugin, loaded by tests/conftest.py).

Expensive things happen once per test session (with pytest-xdist: once per worker, or once for
the whole run where a file lock lets workers share the result):

- ``airflow_sqlite_template``: ``airflow db migrate`` into a SQLite file (about 20 s), once per
  run; every env gets a copy of the file.
- ``postgres_server``: one PostgreSQL cluster per run (shared by the workers), on a free
  loopback port.
- ``airflow_postgres_template``: a migrated database on it, once per run; envs and deployments
  get ``CREATE DATABASE ... TEMPLATE`` copies (instant).
- ``make_airflow_env(name, dags=[...], database="sqlite" | "postgres")``: a private Airflow
  installation with a fresh copy of the matching template.

Servers are started on demand (only a session that needs PostgreSQL starts it) and stopped by
process id at the end of the session.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pytest

from tests.harness.airflow import (
    AirflowEnv,
    PostgresTemplate,
    SqliteTemplate,
    migrate_postgres_template,
    migrate_sqlite_template,
)
from tests.harness.servers import PostgresServer, start_postgres

MakeEnv = Callable[..., AirflowEnv]


def run_tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory shared by every xdist worker of this run (the run's base temp dir), or
    the session's own base temp dir without xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextmanager
def run_lock(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """An exclusive lock over ``<run tmp>/<name>`` for building something once per run."""
    root = run_tmp_root(tmp_path_factory) / name
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield root
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def airflow_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> SqliteTemplate:
    """A migrated SQLite metadata database, built by the first worker that needs it."""
    with run_lock(tmp_path_factory, "airflow-sqlite-template") as root:
        done = root / "template" / "airflow.db"
        if (root / "ok").exists():
            return SqliteTemplate(done)
        template = migrate_sqlite_template(root / "template")
        (root / "ok").touch()
        return template


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the whole run: the first worker that needs it starts it, the
    others attach to it (its address is in a file under the run's temp dir), and the last one
    to finish stops it."""
    with run_lock(tmp_path_factory, "postgres") as root:
        state = _read_state(root)
        if state is None:
            server = start_postgres(root / "cluster")
            state = {"server": _server_fields(server), "users": 0, "templates": []}
        else:
            server = PostgresServer(**_server_from_fields(state["server"]))
        state["users"] += 1
        _write_state(root, state)
    try:
        yield server
    finally:
        with run_lock(tmp_path_factory, "postgres") as root:
            state = _read_state(root)
            if state is not None:
                state["users"] -= 1
                if state["users"] <= 0:
                    server.stop()
                    (root / "state.json").unlink()
                else:
                    _write_state(root, state)


@pytest.fixture(scope="session")
def airflow_postgres_template(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> PostgresTemplate:
    """``airflow db migrate`` into ``af_template`` on the run's PostgreSQL server, once."""
    name = "af_template"
    with run_lock(tmp_path_factory, "postgres") as root:
        state = _read_state(root)
        assert state is not None, "the PostgreSQL server's state file is gone"
        if name not in state["templates"]:
            migrate_postgres_template(postgres_server, root / f"migrate-{postgres_server.port}", name)
            state["templates"].append(name)
            _write_state(root, state)
    return PostgresTemplate(postgres_server, name)


def _read_state(root: Path) -> dict | None:
    path = root / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def _write_state(root: Path, state: dict) -> None:
    tmp = root / "state.json.tmp"
    tmp.write_text(json.dumps(state))
    tmp.replace(root / "state.json")


def _server_fields(server: PostgresServer) -> dict:
    return {"port": server.port, "datadir": str(server.datadir), "bindir": str(server.bindir),
            "database": server.database}


def _server_from_fields(fields: dict) -> dict:
    return {**fields, "datadir": Path(fields["datadir"]), "bindir": Path(fields["bindir"])}


@pytest.fixture(scope="session")
def make_airflow_env(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> MakeEnv:
    """``make_airflow_env(name, dags=[paths], database="sqlite")``: a fresh private Airflow.

    Session-scoped so that module-scoped fixtures can build one and share its DAG runs; the
    PostgreSQL server and template are only started when an env asks for PostgreSQL."""

    def make(name: str, dags: Iterable[Path] = (), database: str = "sqlite") -> AirflowEnv:
        if database == "sqlite":
            template = request.getfixturevalue("airflow_sqlite_template")
        elif database == "postgres":
            template = request.getfixturevalue("airflow_postgres_template")
        else:
            raise ValueError(f"database must be 'sqlite' or 'postgres', got {database!r}")
        return AirflowEnv(tmp_path_factory.mktemp(name), template, dags)

    return make
