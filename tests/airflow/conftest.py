"""Fixtures for the real-Airflow tests: one migrated metadata DB per session, copied per test.

``airflow db migrate`` takes ~9 s, so it runs once into a template SQLite file; every test (or
module, where several tests share one DAG run) gets its own AIRFLOW_HOME with a copy of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import pytest

from tests.airflow.harness import AIRFLOW_BIN, AirflowEnv, migrate_template

MakeEnv = Callable[..., AirflowEnv]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if AIRFLOW_BIN.exists():
        return
    skip = pytest.mark.skip(reason=f"Airflow is not installed next to {AIRFLOW_BIN.parent}")
    for item in items:
        if "airflow" in item.keywords and str(item.fspath).startswith(str(Path(__file__).parent)):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def airflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrate_template(tmp_path_factory.mktemp("airflow-template"))


@pytest.fixture(scope="session")
def make_airflow_env(tmp_path_factory: pytest.TempPathFactory, airflow_template_db: Path) -> MakeEnv:
    """``make_airflow_env(name, dags=[...])``: a fresh private Airflow installation.

    Session-scoped so that module-scoped fixtures can build one and share its DAG runs."""

    def make(name: str, dags: Iterable[str] = ()) -> AirflowEnv:
        return AirflowEnv(tmp_path_factory.mktemp(name), airflow_template_db, dags)

    return make
