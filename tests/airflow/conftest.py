"""Fixtures of the ``airflow dags test`` tier: ``make_airflow_env(name, dags=[...])`` gives a
private Airflow installation (tests/harness/airflow.py) with a copy of the session's migrated
SQLite template and the named DAG files of tests/airflow/dags (plus xcs_values.py, which every
DAG here imports)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import pytest

from tests.harness.airflow import AIRFLOW_BIN, AirflowEnv
from tests.airflow.dagfiles import DAGS_SOURCE, SHARED_DAG_MODULES

MakeEnv = Callable[..., AirflowEnv]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if AIRFLOW_BIN.exists():
        return
    skip = pytest.mark.skip(reason=f"Airflow is not installed next to {AIRFLOW_BIN.parent}")
    for item in items:
        if "airflow" in item.keywords and str(item.fspath).startswith(str(Path(__file__).parent)):
            item.add_marker(skip)


def dag_paths(names: Iterable[str]) -> list[Path]:
    return [DAGS_SOURCE / name for name in (*SHARED_DAG_MODULES, *names)]


@pytest.fixture(scope="session")
def make_airflow_env(make_airflow_env) -> MakeEnv:  # the harness's, with this tier's DAGs
    """``make_airflow_env(name, dags=["xcs_roundtrip.py", ...])``."""

    def make(name: str, dags: Iterable[str] = (), database: str = "sqlite") -> AirflowEnv:
        return make_airflow_env(name, dag_paths(dags), database)

    return make
