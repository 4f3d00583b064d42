"""Fixtures of the lifecycle tests: ``make_env(name, "sqlite" | "postgres")`` is a private
Airflow (tests/harness/airflow.py) with the lifecycle DAGs, on a copy of the session's migrated
SQLite file or on a database cloned from the migrated template database of the session's real
PostgreSQL server."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from tests.harness.airflow import AIRFLOW_BIN, AirflowEnv

HERE = Path(__file__).resolve().parent
DAGS = [HERE.parent / "airflow" / "dags" / "xcs_values.py", HERE / "dags" / "xcs_gc.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if AIRFLOW_BIN.exists():
        return
    skip = pytest.mark.skip(reason=f"Airflow is not installed next to {AIRFLOW_BIN.parent}")
    for item in items:
        if "airflow" in item.keywords and str(item.fspath).startswith(str(HERE)):
            item.add_marker(skip)


MakeEnv = Callable[[str, str], AirflowEnv]


@pytest.fixture(scope="session")
def make_env(make_airflow_env) -> MakeEnv:
    """``make_env(name, "sqlite" | "postgres")``: a private Airflow with the lifecycle DAGs."""

    def make(name: str, database: str = "sqlite") -> AirflowEnv:
        return make_airflow_env(name, DAGS, database)

    return make
