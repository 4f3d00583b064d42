"""Fixtures for the lifecycle tests: real Airflow on SQLite (a copy of one migrated template
file) and on a real PostgreSQL server (a database cloned from one migrated template database)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from tests.airflow.harness import AIRFLOW_BIN, migrate_template
from tests.maintenance.airflow_env import MaintenanceEnv, PostgresTemplate, migrate_postgres_template


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if AIRFLOW_BIN.exists():
        return
    skip = pytest.mark.skip(reason=f"Airflow is not installed next to {AIRFLOW_BIN.parent}")
    for item in items:
        if "airflow" in item.keywords and str(item.fspath).startswith(str(Path(__file__).parent)):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrate_template(tmp_path_factory.mktemp("maint-sqlite-template"))


@pytest.fixture(scope="session")
def postgres_template(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path):
    from tests.servers import start_postgres

    server = start_postgres(tmp_path_factory.mktemp("maint-pg"))
    try:
        yield migrate_postgres_template(server, tmp_path_factory.mktemp("maint-pg-migrate"))
    finally:
        server.stop()


MakeEnv = Callable[[str, str], MaintenanceEnv]


@pytest.fixture(scope="session")
def make_env(tmp_path_factory, request) -> MakeEnv:
    """``make_env(name, "sqlite" | "postgres")``: a private Airflow with the lifecycle DAGs."""

    def make(name: str, database: str = "sqlite") -> MaintenanceEnv:
        sqlite = request.getfixturevalue("sqlite_template")
        pg: PostgresTemplate | None = request.getfixturevalue("postgres_template") if database == "postgres" else None
        return MaintenanceEnv(tmp_path_factory.mktemp(name), sqlite, pg)

    return make
