"""Shared test configuration.

The real-server tiers share one harness (tests/harness/); its session fixtures
(``make_airflow_env``, ``postgres_server``, ``airflow_sqlite_template``, ...) are registered
here for every test directory. Store tests keep their own SeaweedFS fixture
(tests/stores/conftest.py, importing tests/harness/servers.py).
"""

from __future__ import annotations

import os
import sys

import pytest

# Cache bytecode, whatever the calling environment says: the real-server tiers start dozens of
# fresh interpreters (every Airflow command, scheduler, worker and task process) that import
# Airflow, SQLAlchemy, pandas and pyarrow; without __pycache__ files each one compiles them all
# again (3-4 s of CPU a process). Child processes and pytest-xdist workers inherit this.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

pytest_plugins = ["tests.harness.fixtures"]

#: Test directories whose files take minutes each: run first, so that with pytest-xdist the
#: long files start at once and the short ones fill the gaps (longest first).
_SLOW_FIRST = ("tests/deployment/", "tests/maintenance/", "tests/airflow/")


def _rank(item: pytest.Item) -> int:
    path = item.nodeid
    for rank, prefix in enumerate(_SLOW_FIRST):
        if path.startswith(prefix):
            return rank
    return len(_SLOW_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: file order within each directory is kept
