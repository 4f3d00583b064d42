"""Link-aware purge (``pipeline/purge.py``): the one place that decides whether a shared blob
may go, used by retention, the engine and reconcile. A real local store written by the real
engine; listings are counted where cost is the point."""

from __future__ import annotations

import pytest

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.coordinate import run_links_prefix
from xcomstash.format.reference import Reference
from xcomstash.pipeline import purge
from xcomstash.pipeline.purge import linked_digests, purge_objects, unlinked_blobs
from xcomstash.stores import LocalStore


def xcom(task: str, run: str = "r1") -> XComCoordinate:
    return XComCoordinate("d", run, task, -1, "return_value")


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def listed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The prefixes purge lists, in order."""
    prefixes: list[str] = []
    real = purge.list_objects

    def counting(store, prefix="", **kwargs):
        prefixes.append(prefix)
        return real(store, prefix, **kwargs)

    monkeypatch.setattr(purge, "list_objects", counting)
    return prefixes


def push(store: LocalStore, coordinate: XComCoordinate, payload: bytes, dedup: bool = True) -> Reference:
    engine = Engine(StashConfig(store_url=store.root_uri, threshold=0, dedup=dedup, read_ahead=False), store=store)
    return Reference.from_json(engine.serialize(payload, coordinate))


def keys(store: LocalStore) -> set[str]:
    return {i.key for i in store.list()}


def test_purge_keeps_blob_while_another_link_names_it(store) -> None:
    a = push(store, xcom("a"), b"same" * 1000)
    b = push(store, xcom("b"), b"same" * 1000)
    blob = store.key_for(a.uri)
    assert a.uri == b.uri

    result = purge_objects(store, [(xcom("a"), a)])
    assert keys(store) == {blob, xcom("b").link_key(b.digest)}
    assert (result.deleted, result.kept_shared, result.errors) == (1, 1, [])


def test_purge_deletes_blob_with_its_last_link(store) -> None:
    a = push(store, xcom("a"), b"same" * 1000)
    b = push(store, xcom("b"), b"same" * 1000)
    size = sum(store.head(k).size for k in keys(store))
    result = purge_objects(store, [(xcom("a"), a), (xcom("b"), b)])
    assert keys(store) == set()
    assert (result.deleted, result.deleted_bytes, result.kept_shared) == (3, size, 0)


def test_purge_of_one_item_lists_the_runs_links_once(store, listed) -> None:
    """The engine purges a single replaced row through purge_objects: one listing, no more."""
    a = push(store, xcom("a"), b"payload" * 1000)
    push(store, xcom("other", run="r2"), b"payload" * 1000)  # another run: not listed
    purge_objects(store, [(xcom("a"), a)])
    assert listed == [run_links_prefix(xcom("a").run_prefix())]
    assert all(not k.startswith(xcom("a").run_prefix() + "/") for k in keys(store))


def test_purge_deletes_a_per_xcom_object_without_listing(store, listed) -> None:
    a = push(store, xcom("a"), b"x" * 5000, dedup=False)
    result = purge_objects(store, [(xcom("a"), a)])
    assert keys(store) == set() and result.deleted == 1 and listed == []


def test_linked_digests_names_the_blobs_a_runs_links_point_at(store) -> None:
    a = push(store, xcom("a"), b"one" * 1000)
    b = push(store, xcom("b"), b"two" * 1000)
    push(store, xcom("c", run="r2"), b"three" * 1000)
    assert linked_digests(store, xcom("a").run_prefix()) == {a.digest.split(":")[1], b.digest.split(":")[1]}


def test_unlinked_blobs_splits_candidates_by_whether_a_link_names_them(store) -> None:
    a = push(store, xcom("a"), b"one" * 1000)
    digest = a.digest.split(":")[1]
    unlinked, kept = unlinked_blobs(store, xcom("a").run_prefix(), [("linked", digest), ("orphan", "0" * 64)])
    assert (unlinked, kept) == (["orphan"], ["linked"])
