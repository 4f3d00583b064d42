"""Fixtures for codec tests: a real Engine on a LocalStore in a temporary directory.

Every round trip goes through the whole pipeline (route, codec, frames, store, reference,
verify, decode), and the reference passes through ``json`` on the way, as it would through
the xcom table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.format.reference import is_reference

COORDINATE = XComCoordinate(
    dag_id="codec_dag",
    run_id="manual__2026-01-01T00:00:00+00:00",
    task_id="producer",
    map_index=-1,
    key="return_value",
)


def row_roundtrip(engine: Engine, value: Any, coordinate: XComCoordinate = COORDINATE) -> Any:
    """Push ``value``, require that it was stored, pass the row through JSON, pull it."""
    stored = engine.serialize(value, coordinate)
    assert is_reference(stored), f"expected a reference, got {stored!r:.200}"
    row = json.loads(json.dumps(stored))
    return engine.deserialize(row)


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def engine(store_root: Path) -> Engine:
    """Stores every value (threshold 0)."""
    return Engine(StashConfig(store_url=f"file://{store_root}", threshold=0))


@pytest.fixture
def exclusive_engine(store_root: Path) -> Engine:
    """Stores every value (exclusive mode, default threshold)."""
    return Engine(StashConfig(store_url=f"file://{store_root}", exclusive=True))


@pytest.fixture
def roundtrip(engine: Engine) -> Callable[[Any], Any]:
    return lambda value: row_roundtrip(engine, value)


@pytest.fixture(scope="module")
def module_store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store directory shared by a module's hypothesis tests (function-scoped fixtures are
    set up once per test, not once per example)."""
    return tmp_path_factory.mktemp("hypothesis-store")


@pytest.fixture(scope="module")
def module_engine(module_store_root: Path) -> Engine:
    return Engine(StashConfig(store_url=f"file://{module_store_root}", threshold=0))
