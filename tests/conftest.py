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

#: The files that take longest (seconds each took in a run of the whole suite on two workers,
#: 2026-12-03, after every Airflow command of an installation moved under one fork server), so that with
#: pytest-xdist (whole files per worker) they start first and the short ones fill the gaps.
#: The deployment modules wait on Airflow much of that time (CPU: local 225 s, celery 92 s).
#: The versions tier: about 80 s with its virtualenvs made (50 CPU s, since its ``dags test``
#: caches the execution API as 3.3 does), 30-60 s more where uv has to make them (cold CI).
#: test_plugin_ui.py, test_check.py, test_sweeps.py and the entries from test_roundtrip.py down: a
#: whole-suite run of 2026-12-03 (3 workers, a busy machine), its wall times divided by 2.4 (what
#: the files above took there, against alone).
_FILE_WEIGHTS = {
    "tests/deployment/test_local_executor.py": 280,
    "tests/deployment/test_celery_executor.py": 130,
    "tests/maintenance/test_migrate_airflow.py": 81,
    "tests/airflow/test_replicated.py": 61,
    "tests/maintenance/test_reconcile_airflow.py": 100,
    "tests/maintenance/test_reconcile_cases_airflow.py": 97,
    "tests/deployment/test_replicated_deployment.py": 69,
    "tests/commands/test_rotation_airflow.py": 105,
    "tests/airflow/test_security.py": 80,
    "tests/airflow/test_default_security.py": 38,
    "tests/airflow/test_compat.py": 76,
    "tests/airflow/test_faults.py": 40,
    "tests/airflow/test_plugin_ui.py": 76,
    "tests/maintenance/test_retention_verify_airflow.py": 30,
    "tests/maintenance/test_forged_rows_airflow.py": 28,
    "tests/airflow/test_extra_links.py": 17,
    "tests/airflow/test_cross_dag.py": 17,
    "tests/maintenance/test_check.py": 23,
    "tests/versions/test_airflow_minors.py": 100,
    "tests/bench/test_sweeps.py": 35,
    "tests/airflow/test_roundtrip.py": 40,
    "tests/airflow/test_sensitive_leaks.py": 36,
    "tests/airflow/test_metrics.py": 36,
    "tests/airflow/test_exclusive_and_config.py": 33,
    "tests/airflow/test_rerun.py": 33,
    "tests/airflow/test_dedup.py": 25,
    "tests/format/test_fuzz_parsers.py": 19,
    "tests/stores/test_azure.py": 19,
}
#: Any other file that starts Airflow (marker ``airflow`` or ``deployment``, or an Airflow
#: installation fixture): one fork server (about 12 s) and a few commands.
_AIRFLOW_FILE_WEIGHT = 15
_AIRFLOW_FIXTURES = ("make_airflow_env", "make_env", "airflow_sqlite_template", "airflow_postgres_template")


def _weight(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    if path in _FILE_WEIGHTS:
        return _FILE_WEIGHTS[path]
    fixtures = getattr(item, "fixturenames", ())
    if (
        item.get_closest_marker("airflow")
        or item.get_closest_marker("deployment")
        or any(name in fixtures for name in _AIRFLOW_FIXTURES)
    ):
        return _AIRFLOW_FILE_WEIGHT
    return 0


@pytest.hookimpl(trylast=True)  # after the directory conftests have added their markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Heaviest files first, each file's tests kept together and in order (a stable sort on
    the file's weight: the heaviest test of a file decides)."""
    weights: dict[str, int] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        weights[path] = max(weights.get(path, 0), _weight(item))
    items.sort(key=lambda item: -weights[item.nodeid.split("::", 1)[0]])


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Close the Airflow fork servers (tests/harness/airflow.py) while this process can still
    wait for them: an xdist worker may end without running atexit handlers, and a server left
    to exit on its own is neither waited for nor counted in the command log."""
    from tests.harness.airflow import close_servers

    close_servers()
