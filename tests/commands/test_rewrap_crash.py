"""Re-wrapping is crash-safe, resumable, and never overwrites a concurrent writer's object.

On the local store (real files). A crash is a ``BaseException`` raised from inside the store
or the row source at a chosen moment, as a killed process would stop there: before an
object's publish, right after it, or between two references. At every such point every value
reads (both keys are still deployed), and running the command again completes the work, after
which the old key can go.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import pytest

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.commands.rewrap import resign_references, rewrap_store
from xcomstash.format.container import read_layout
from xcomstash.security.crypto.keyset import Key, KeyRing, Keyset
from xcomstash.security.crypto.stream import slot_key_id
from xcomstash.security.guard import Guard, SecurityConfig
from xcomstash.stores.base import ObjectInfo
from xcomstash.stores.faulty import FaultyStore
from xcomstash.stores.wrapper import WrapperStore
from tests.commands.test_rewrap import TableRows


class Crash(BaseException):
    """The process died here."""


def engine_for(root, keyset: Keyset) -> Engine:
    return Engine(
        StashConfig(store_url=f"file://{root}", threshold=0, read_ahead=False),
        guard=Guard(SecurityConfig(keyring=KeyRing.single(keyset), encrypt=True, sign_references=True)),
    )


def coords(n: int) -> list[XComCoordinate]:
    return [XComCoordinate("dag_c", "run", f"t{i}", -1, "return_value") for i in range(n)]


def two_step(k1: Keyset) -> Keyset:
    """``keys add`` then ``keys promote``: the new key first, the old one kept for reading."""
    new = Key.generate()
    return Keyset(new.id, (new, *k1.keys))


def values(n: int) -> list[np.ndarray]:
    return [np.arange(500 * (i + 1), dtype="float64") + i for i in range(n)]


class CrashingStore(WrapperStore):
    """Publishes ``survive`` objects, then dies before (``when="before"``) or right after
    (``"after"``) the next publish."""

    def __init__(self, inner: Any, survive: int, when: str) -> None:
        super().__init__(inner)
        self.left, self.when = survive, when

    @contextmanager
    def writer(self, key: str) -> Iterator[Any]:
        if self.left == 0 and self.when == "before":
            raise Crash(key)
        with self.inner.writer(key) as sink:
            yield sink
        if self.left == 0 and self.when == "after":
            raise Crash(key)
        self.left -= 1


class CrashingRows(TableRows):
    def __init__(self, rows: dict, survive: int) -> None:
        super().__init__({})
        self.values = rows
        self.left = survive

    def replace_value(self, coordinate, expected, new_value) -> bool:
        if self.left == 0:
            raise Crash(str(coordinate))
        self.left -= 1
        return super().replace_value(coordinate, expected, new_value)


def setup(root, n: int = 4) -> tuple[Keyset, Keyset, TableRows, list[np.ndarray]]:
    k1 = Keyset.generate()
    first = engine_for(root, k1)
    vals = values(n)
    table = TableRows({c: first.serialize(v, c) for c, v in zip(coords(n), vals)})
    return k1, two_step(k1), table, vals


def all_read(root, keyset: Keyset, table: TableRows, vals: list[np.ndarray]) -> bool:
    engine = engine_for(root, keyset)
    return all(np.array_equal(engine.deserialize(table.row(c), c), v) for c, v in zip(coords(len(vals)), vals))


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("survive", [0, 1, 3])
def test_crash_around_any_object_publish_keeps_values_readable_and_a_rerun_completes(tmp_path, survive, when) -> None:
    root = tmp_path / "store"
    k1, k2, table, vals = setup(root)
    state = tmp_path / "state.json"
    store = engine_for(root, k2).store
    with pytest.raises(Crash):
        rewrap_store(CrashingStore(store, survive, when), KeyRing.single(k2), state=state)
    assert all_read(root, k2, table, vals)  # mid-way: some slots new, some old, MACs old
    summary = rewrap_store(store, KeyRing.single(k2), state=state)
    assert summary.complete and summary.failed == []
    # The resumed run starts after the last object its checkpoint records; one published just
    # before the crash (not yet in the checkpoint) is found current and skipped.
    assert (summary.rewrapped, summary.current) == (4 - survive - (when == "after"), int(when == "after"))
    resign_references(table, KeyRing.single(k2), summary)
    assert summary.references_resigned == 4
    keys = {slot_key_id(_layout(store, c).key_slot) for c in coords(4)}
    assert keys == {k2.primary_id}
    assert all_read(root, k2.without(k1.primary_id), table, vals)


@pytest.mark.parametrize("survive", [0, 2])
def test_crash_between_references_keeps_values_readable_and_a_rerun_completes(tmp_path, survive) -> None:
    root = tmp_path / "store"
    k1, k2, table, vals = setup(root)
    store = engine_for(root, k2).store
    summary = rewrap_store(store, KeyRing.single(k2))
    crashing = CrashingRows(table.values, survive)
    with pytest.raises(Crash):
        resign_references(crashing, KeyRing.single(k2), summary)
    assert all_read(root, k2, table, vals)  # some MACs new, some old
    again = rewrap_store(store, KeyRing.single(k2))
    resign_references(table, KeyRing.single(k2), again)
    assert again.references_resigned == 4 - survive and again.references_current == survive
    assert all_read(root, k2.without(k1.primary_id), table, vals)


def test_checkpoint_keeps_objects_that_failed_for_the_next_run(tmp_path) -> None:
    """A transient failure used to be recorded as done in ``--state``: the resumed run skipped
    that object for good, and it stayed under the old key."""
    root = tmp_path / "store"
    k1, k2, table, vals = setup(root)
    store = engine_for(root, k2).store
    victim = store.key_for(table.row(coords(4)[1])["uri"])
    flaky = FaultyStore(store, fail_reads=True, only_keys=lambda k: k == victim)
    state = tmp_path / "state.json"
    first = rewrap_store(flaky, KeyRing.single(k2), state=state)
    assert first.rewrapped == 3 and len(first.failed) == 1
    second = rewrap_store(store, KeyRing.single(k2), state=state)
    assert second.rewrapped == 1
    assert slot_key_id(_layout(store, coords(4)[1]).key_slot) == k2.primary_id
    assert not first.complete and second.complete


def test_checkpoint_of_an_earlier_rotation_is_ignored(tmp_path) -> None:
    root = tmp_path / "store"
    k1, k2, table, vals = setup(root)
    store = engine_for(root, k2).store
    state = tmp_path / "state.json"
    assert rewrap_store(store, KeyRing.single(k2), state=state).rewrapped == 4
    k3 = two_step(k2)
    assert rewrap_store(store, KeyRing.single(k3), state=state).rewrapped == 4


# ----------------------------------------------------------- concurrent writer (finding 17)


class CoarseTimes(WrapperStore):
    """Modification times in whole seconds, as S3 reports them; ``during_copy`` runs when the
    re-wrap starts writing its copy (a task retry that writes the same object right then)."""

    def __init__(self, inner: Any, during_copy: Any) -> None:
        super().__init__(inner)
        self.during_copy = during_copy

    def head(self, key: str) -> ObjectInfo | None:
        info = self.inner.head(key)
        return None if info is None else ObjectInfo(info.key, info.size, 0.0)

    @contextmanager
    def writer(self, key: str) -> Iterator[Any]:
        if self.during_copy is not None:
            hook, self.during_copy = self.during_copy, None
            hook()
        with self.inner.writer(key) as sink:
            yield sink


class States:
    def __init__(self, states: dict[tuple[str, str], str]) -> None:
        self.states = states

    def run_states(self, runs=None, *, only_states=None):
        return {
            r: s for r, s in self.states.items()
            if (runs is None or r in set(runs)) and (only_states is None or s in set(only_states))
        }


def _retry_scenario(tmp_path) -> tuple[Any, ...]:
    root = tmp_path / "store"
    k1 = Keyset.generate()
    c = coords(1)[0]
    engine_for(root, k1).serialize(np.arange(800.0), c)
    k2 = two_step(k1)
    retried: dict[str, Any] = {}

    def retry() -> None:  # the task's retry pushes a new value of the same size, same XCom
        retried["row"] = engine_for(root, k2).serialize(np.arange(800.0) * 2, c)

    return root, k2, c, retried, retry


def test_a_retry_writing_the_object_during_the_rewrap_is_not_overwritten(tmp_path) -> None:
    """Before: size and (whole-second) modification time matched, the re-wrap published its
    copy of the old object over the retry's, and the retry's signed reference then failed
    with IntegrityError. Now the object is checked again inside the write and left alone."""
    root, k2, c, retried, retry = _retry_scenario(tmp_path)
    store = CoarseTimes(engine_for(root, k2).store, retry)
    summary = rewrap_store(store, KeyRing.single(k2))
    assert np.array_equal(engine_for(root, k2).deserialize(retried["row"], c), np.arange(800.0) * 2)
    assert summary.skipped_changed == 1 and summary.rewrapped == 0 and not summary.complete


def test_objects_of_running_dag_runs_are_left_alone(tmp_path) -> None:
    root, k2, c, retried, retry = _retry_scenario(tmp_path)
    store = CoarseTimes(engine_for(root, k2).store, retry)
    summary = rewrap_store(store, KeyRing.single(k2), runs=States({(c.dag_id, c.run_id): "running"}))
    assert summary.skipped_busy == 1 and summary.rewrapped == 0 and "row" not in retried
    done = rewrap_store(store, KeyRing.single(k2), runs=States({(c.dag_id, c.run_id): "success"}))
    assert done.skipped_changed == 1  # the retry happened during this one: still not overwritten
    assert np.array_equal(engine_for(root, k2).deserialize(retried["row"], c), np.arange(800.0) * 2)


def _layout(store: Any, c: XComCoordinate) -> Any:
    data = store.get(c.object_key())
    return read_layout(len(data), lambda o, n: data[o : o + n])
