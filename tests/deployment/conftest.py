"""Fixtures of the deployment tier: one real Airflow deployment per executor variant, started
once per test module (``local_deployment`` in test_local_executor.py, ``celery_deployment`` in
test_celery_executor.py) and stopped by process id when the module ends. Its metadata database
is a copy of the session's migrated PostgreSQL template (tests/harness/fixtures.py); S3, the
fault proxy and Redis are its own (the tests stop and slow them).

A test that fails gets the tail of every Airflow process log in its report (the full logs stay
under the module's temporary directory, printed in the report too).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.deployment.stack import Deployment
from tests.harness.airflow import airflow_installed

HERE = Path(__file__).resolve().parent


def _missing_prerequisite() -> str | None:
    if not airflow_installed():
        return "Airflow is not installed next to this interpreter"
    if not shutil.which("redis-server"):
        return "redis-server not found (scripts/test-deps.sh installs it)"
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return "PostgreSQL server binaries not found under /usr/lib/postgresql"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = _missing_prerequisite()
    for item in items:
        if not str(item.fspath).startswith(str(HERE)):
            continue
        item.add_marker(pytest.mark.deployment)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for name in ("local_deployment", "celery_deployment", "replicated_deployment"):
        stack = item.funcargs.get(name) if hasattr(item, "funcargs") else None
        if isinstance(stack, Deployment):
            report.sections.append((f"deployment ({stack.root})", stack.describe(60)))


def _deployment(tmp_path_factory: pytest.TempPathFactory, name: str, **kwargs) -> Iterator[Deployment]:
    stack = Deployment(tmp_path_factory.mktemp(name), **kwargs)
    started = time.monotonic()
    stack.start()
    stack.timings["start_s"] = time.monotonic() - started
    try:
        yield stack
    finally:
        stack.stop()
        print(f"\n{name}: timings {({k: round(v, 1) for k, v in stack.timings.items()})}")


@pytest.fixture(scope="module")
def local_deployment(tmp_path_factory: pytest.TempPathFactory, airflow_postgres_template) -> Iterator[Deployment]:
    """Scheduler (LocalExecutor), DAG processor and API server on PostgreSQL, store on S3."""
    yield from _deployment(
        tmp_path_factory, "local", executor="local", parallelism=6, database=airflow_postgres_template,
        dags=["xd_workload.py", "xd_faults.py", "xd_soak.py"],
    )


@pytest.fixture(scope="module")
def celery_deployment(tmp_path_factory: pytest.TempPathFactory, airflow_postgres_template) -> Iterator[Deployment]:
    """The same with CeleryExecutor: Redis broker, two workers with their own read caches."""
    yield from _deployment(
        tmp_path_factory, "celery", executor="celery", workers=2, worker_concurrency=2, parallelism=8,
        database=airflow_postgres_template, dags=["xd_workload.py", "xd_faults.py"],
    )
