"""Every way a task can read a stored value goes through the one pull path: a single pull
(``get_one``, ``aget_one``), fan-in (``get_all``, ``aget_all``, ``deserialize_many``), Airflow's
lazy sequence of mapped outputs (``deserialize_value`` without an expected XCom), sequential
reads served by read-ahead, and partial table reads (``read_table``, ``pull_table``).

Each entry point is checked for the same five things: it records an event (audit), refuses a
reader the producer did not allow, refuses a reference copied into another XCom's row,
refuses damaged bytes, and reads the right value from the store when the local cache copy is
damaged. The backend's real methods run against a supervisor channel that answers from a
dict of rows (standing in for the task's connection to the Airflow API server).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest

from xcomstash import Restricted
from xcomstash.config import StashConfig
from xcomstash.coordinate import XComCoordinate
from xcomstash.engine import Engine
from xcomstash.errors import AccessDeniedError, IntegrityError, ReferenceSignatureError
from tests.harness.events import Collector
from xcomstash.security.guard import Guard, SecurityConfig
from xcomstash.security.readers import Actor, Expected
from xcomstash.stores.caching import CachingStore
from xcomstash.stores.local import LocalStore

pytest.importorskip("airflow.sdk")
from airflow.sdk.execution_time import task_runner  # noqa: E402
from airflow.sdk.execution_time.comms import (  # noqa: E402
    GetXCom,
    GetXComSequenceSlice,
    XComResult,
    XComSequenceSliceResult,
)

from xcomstash.airflow import backend as backend_module  # noqa: E402
from xcomstash.airflow import security_settings  # noqa: E402
from xcomstash.airflow import tables as tables_module  # noqa: E402
from xcomstash.airflow.backend import XComStashBackend, _Row  # noqa: E402

DAG, RUN, OTHER_RUN, TASK, KEY = "etl", "run_1", "run_0", "extract", "return_value"
READER = Actor(DAG, RUN, "consumer", -1, 1)
N = 4


def frame(i: int) -> pd.DataFrame:
    return pd.DataFrame({"a": range(i, i + 2000), "b": [f"row {n}" for n in range(2000)]})


def coord(i: int, run_id: str = RUN) -> XComCoordinate:
    return XComCoordinate(DAG, run_id, TASK, i, KEY)


class Channel:
    """Answers the backend's requests from rows, as the API server would from the xcom table."""

    def __init__(self, rows: dict[int, Any]) -> None:
        self.rows = rows

    def send(self, msg: Any) -> Any:
        if isinstance(msg, GetXCom):
            return XComResult(key=msg.key, value=self.rows.get(msg.map_index))
        if isinstance(msg, GetXComSequenceSlice):
            return XComSequenceSliceResult(root=[self.rows[i] for i in sorted(self.rows)])
        raise AssertionError(f"unexpected request {msg!r}")

    async def asend(self, msg: Any) -> Any:
        return self.send(msg)


class Setup:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.cache_dir = tmp_path / "cache"
        self.store_dir = tmp_path / "store"
        self.collector = Collector()
        store = CachingStore(LocalStore(str(self.store_dir)), self.cache_dir, 1 << 30)
        self.engine = Engine(
            StashConfig(store_url=f"file://{self.store_dir}", threshold=0),
            store,
            guard=Guard(SecurityConfig(), None, lambda: READER),
            subscribers=[self.collector],
        )
        self.rows = {i: self.engine.serialize(frame(i), coord(i)) for i in range(N)}
        monkeypatch.setattr(backend_module, "engine", lambda: self.engine)
        monkeypatch.setattr(tables_module, "engine", lambda: self.engine)
        monkeypatch.setattr(security_settings, "current_actor", lambda: READER)
        monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", Channel(self.rows), raising=False)

    def object_path(self, i: int) -> Path:
        return self.store_dir / self.engine.store.key_for(self.rows[i]["uri"])


def _sequential(setup: Setup, i: int) -> Any:
    """Mapped outputs read one by one, in order: from index 2 on, read-ahead serves them."""
    expected = lambda n: Expected(DAG, RUN, TASK, n, KEY)  # noqa: E731
    values = [setup.engine.deserialize(setup.rows[n], expected=expected(n)) for n in range(N)]
    return values[i]


#: Entry point name -> how a task reads map index ``i`` through it.
ENTRY_POINTS: dict[str, Callable[[Setup, int], Any]] = {
    "get_one": lambda s, i: XComStashBackend.get_one(key=KEY, dag_id=DAG, task_id=TASK, run_id=RUN, map_index=i),
    "aget_one": lambda s, i: asyncio.run(
        XComStashBackend.aget_one(key=KEY, dag_id=DAG, task_id=TASK, run_id=RUN, map_index=i)
    ),
    "get_all": lambda s, i: XComStashBackend.get_all(key=KEY, dag_id=DAG, task_id=TASK, run_id=RUN)[i],
    "aget_all": lambda s, i: asyncio.run(XComStashBackend.aget_all(key=KEY, dag_id=DAG, task_id=TASK, run_id=RUN))[i],
    "lazy sequence": lambda s, i: XComStashBackend.deserialize_value(_Row(s.rows[i])),
    "read-ahead": _sequential,
    "pull_table": lambda s, i: tables_module.pull_table(TASK, dag_id=DAG, run_id=RUN, map_index=i),
    "read_table": lambda s, i: s.engine.read_table(s.rows[i], ["a", "b"], expected=Expected(DAG, RUN, TASK, i, KEY))[0],
}


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    return Setup(tmp_path, monkeypatch)


@pytest.fixture(params=sorted(ENTRY_POINTS))
def read(request: pytest.FixtureRequest) -> Callable[[Setup, int], Any]:
    return ENTRY_POINTS[request.param]


def test_every_entry_point_reads_the_value_and_records_an_event(setup: Setup, read) -> None:
    pd.testing.assert_frame_equal(read(setup, 2), frame(2))
    pulls = [e for e in setup.collector.events if e.op == "pull" and e.uri == setup.rows[2]["uri"]]
    assert pulls and all(e.outcome == "ok" for e in pulls)


def test_every_entry_point_refuses_a_reader_the_producer_did_not_allow(setup: Setup, read) -> None:
    setup.rows[2] = setup.engine.serialize(Restricted(frame(2), tasks=["someone_else"]), coord(2))
    with pytest.raises(AccessDeniedError):
        read(setup, 2)
    assert any(e.op == "pull" and e.outcome == "denied" for e in setup.collector.events)


def test_every_entry_point_refuses_a_reference_copied_from_another_run(setup: Setup, read) -> None:
    setup.rows[2] = setup.engine.serialize(frame(99), coord(2, run_id=OTHER_RUN))
    with pytest.raises(ReferenceSignatureError, match="copied into another XCom"):
        read(setup, 2)
    assert any(e.op == "pull" and e.outcome == "denied" for e in setup.collector.events)


def test_every_entry_point_refuses_damaged_bytes(setup: Setup, read) -> None:
    path = setup.object_path(2)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as info:
        read(setup, 2)
    assert info.value.uri == setup.rows[2]["uri"]
    assert any(e.op == "pull" and e.outcome == "failed" for e in setup.collector.events)


def test_every_entry_point_reads_from_the_store_when_the_cache_copy_is_damaged(setup: Setup, read) -> None:
    setup.engine.deserialize(setup.rows[2], expected=Expected(DAG, RUN, TASK, 2, KEY))  # fills the cache
    entries = [p for p in setup.cache_dir.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")]
    assert entries, "the whole read filled the cache"
    for entry in entries:
        data = bytearray(entry.read_bytes())
        data[-1] ^= 0xFF
        entry.write_bytes(bytes(data))
    pd.testing.assert_frame_equal(read(setup, 2), frame(2))
