"""Session fixtures of the real-server tiers (a pytest plugin, loaded by tests/conftest.py).

Expensive things happen once per test session (with pytest-xdist: once per worker, or once for
the whole run where a file lock lets workers share the result):

- ``airflow_sqlite_template``: ``airflow db migrate`` into a SQLite file (about 20 s), once per
  run; every env gets a copy of the file.
- ``postgres_server``: one PostgreSQL cluster per worker, on a free loopback port.
- ``airflow_postgres_template``: a migrated database on it; envs and deployments get
  ``CREATE DATABASE ... TEMPLATE`` copies (instant).
- ``make_airflow_env(name, dags=[...], database="sqlite" | "postgres")``: a private Airflow
  installation with a fresh copy of the matching template.

Servers are started on demand (only a session that needs PostgreSQL starts it) and stopped by
process id at the end of the session.
"""

from __future__ import annotations

import fcntl
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
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def airflow_postgres_template(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> PostgresTemplate:
    """``airflow db migrate`` into ``af_template`` on this session's PostgreSQL server."""
    return migrate_postgres_template(postgres_server, tmp_path_factory.mktemp("pg-migrate"))


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
