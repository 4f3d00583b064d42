"""Reconcile on the engine alone: a real local store written by the real engine (dedup on and
off), rows as the xcom table would hold them. Decisions are pinned key by key."""

from __future__ import annotations

import os
import time

import pytest

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.maintenance.reconcile import ReconcileOptions, Reconciler
from xcomstash.maintenance.rows import XComRow
from xcomstash.stores import LocalStore


def xcom(task: str, run: str = "r1", key: str = "return_value", map_index: int = -1, dag: str = "d") -> XComCoordinate:
    return XComCoordinate(dag, run, task, map_index, key)


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def engine_for(store: LocalStore, dedup: bool = True) -> Engine:
    return Engine(StashConfig(store_url=store.root_uri, threshold=0, dedup=dedup, read_ahead=False), store=store)


def keys(store: LocalStore) -> set[str]:
    return {i.key for i in store.list()}


def age(store: LocalStore, seconds: float, only: set[str] | None = None) -> None:
    when = time.time() - seconds
    for key in only if only is not None else keys(store):
        os.utime(store.root / key, (when, when))


def reconcile(store: LocalStore, rows: list[XComRow], grace: float = 60, dry_run: bool = False):
    return Reconciler(store, ReconcileOptions(grace_seconds=grace, dry_run=dry_run)).run(rows, lambda: rows)


def test_shared_blob_stays_while_any_row_references_it_and_goes_with_the_last(store) -> None:
    engine = engine_for(store)
    a = XComRow(xcom("a"), engine.serialize(b"same" * 1000, xcom("a")))
    b = XComRow(xcom("b"), engine.serialize(b"same" * 1000, xcom("b")))
    assert a.value["uri"] == b.value["uri"], "identical payloads of a run share one blob"
    blob = store.key_for(a.value["uri"])
    link_a, link_b = xcom("a").link_key(a.value["digest"]), xcom("b").link_key(b.value["digest"])
    assert keys(store) == {blob, link_a, link_b}
    age(store, 3600)

    report = reconcile(store, [b])  # a's row was deleted behind the backend's back
    assert keys(store) == {blob, link_b}
    assert report.deleted == 1 and report.orphans.sample == [link_a]

    report = reconcile(store, [])
    assert keys(store) == set()
    assert report.deleted == 2


def test_a_fresh_link_protects_an_old_unreferenced_blob(store) -> None:
    """A push that reuses an old blob writes a fresh link before its row exists: the blob's
    age is that of its newest link."""
    engine = engine_for(store)
    a = XComRow(xcom("a"), engine.serialize(b"x" * 5000, xcom("a")))
    age(store, 3600)
    engine.serialize(b"x" * 5000, xcom("late"))  # row not recorded yet
    report = reconcile(store, [])
    blob = store.key_for(a.value["uri"])
    assert blob in keys(store) and xcom("late").link_key(a.value["digest"]) in keys(store)
    assert xcom("a").link_key(a.value["digest"]) not in keys(store)  # old orphan link collected
    assert report.young_orphans.count == 2  # the blob and the fresh link


def test_per_xcom_objects_without_dedup(store) -> None:
    engine = engine_for(store, dedup=False)
    rows = [XComRow(xcom(t), engine.serialize(t.encode() * 3000, xcom(t))) for t in ("a", "b", "c")]
    assert keys(store) == {xcom(t).object_key() for t in ("a", "b", "c")}
    age(store, 3600)
    reconcile(store, rows[:1])
    assert keys(store) == {xcom("a").object_key()}


def test_dry_run_changes_nothing_and_reports_count_bytes_oldest_by_dag(store) -> None:
    engine = engine_for(store)
    for dag in ("d1", "d2"):
        engine.serialize(dag.encode() * 4000, xcom("t", dag=dag))
    before = {i.key: i.size for i in store.list()}
    age(store, 7200)
    report = reconcile(store, [], dry_run=True)
    assert {i.key: i.size for i in store.list()} == before
    assert report.orphans.count == len(before) and report.orphans.bytes == sum(before.values())
    assert set(report.orphans.by_dag) == {"d1", "d2"}
    assert report.orphans.oldest is not None and report.orphans.oldest < time.time() - 7000
    assert report.deleted == 0


def test_missing_objects_are_reported_with_their_rows(store) -> None:
    engine = engine_for(store, dedup=False)
    row = XComRow(xcom("gone"), engine.serialize(b"v" * 5000, xcom("gone")))
    store.delete(store.key_for(row.value["uri"]))
    report = reconcile(store, [row])
    assert report.missing_count == 1 and not report.ok
    assert report.missing[0].coordinate["task_id"] == "gone"


def test_foreign_files_are_never_deleted(store) -> None:
    (store.root / "notes").mkdir(parents=True)
    (store.root / "notes" / "README.txt").write_text("mine")
    age(store, 10**6)
    report = reconcile(store, [])
    assert keys(store) == {"notes/README.txt"} and report.foreign.count == 1


def test_a_rewritten_orphan_is_kept_on_recheck(store) -> None:
    """Listed as old, rewritten (a retry) before its delete: the re-check keeps it."""
    engine = engine_for(store, dedup=False)
    engine.serialize(b"v" * 5000, xcom("retry"))
    age(store, 3600)
    reconciler = Reconciler(store, ReconcileOptions(grace_seconds=60))
    original = reconciler._delete_one

    def rewrite_then_delete(info):
        engine.serialize(b"w" * 5000, xcom("retry"))  # the retry lands between list and delete
        return original(info)

    reconciler._delete_one = rewrite_then_delete  # type: ignore[method-assign]
    report = reconciler.run([])
    assert keys(store) == {xcom("retry").object_key()}
    assert report.kept_on_recheck == 1 and report.deleted == 0


def test_invalid_reference_still_protects_its_uri(store) -> None:
    engine = engine_for(store, dedup=False)
    value = engine.serialize(b"v" * 5000, xcom("t"))
    broken = dict(value, size="not a number")
    age(store, 3600)
    report = reconcile(store, [XComRow(xcom("t"), broken)])
    assert keys(store) == {xcom("t").object_key()}
    assert report.references == 1


def test_rows_as_json_text_are_understood(store) -> None:
    import json

    engine = engine_for(store, dedup=False)
    value = engine.serialize(b"v" * 5000, xcom("t"))
    age(store, 3600)
    reconcile(store, [XComRow(xcom("t"), json.dumps(value))])
    assert keys(store) == {xcom("t").object_key()}


# ------------------------------------------------------- unfinished uploads, per-DAG stores


def leave_unfinished(store: LocalStore, key: str, age_seconds: float) -> str:
    """What a writer killed mid-upload leaves: its temporary file next to the destination
    (written here as the killed process left it), aged."""
    directory = store.root / key.rsplit("/", 1)[0]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f".tmp-{os.urandom(4).hex()}.part"
    path.write_bytes(b"half a value")
    when = time.time() - age_seconds
    os.utime(path, (when, when))
    (token,) = [u.token for u in store.unfinished_uploads() if (store.root / u.token) == path]
    return token


def test_upload_leftovers_of_killed_writers_go_after_the_grace_period(store) -> None:
    old = leave_unfinished(store, "d/r1/old/-1/v.xcs", 3600)
    young = leave_unfinished(store, "d/r1/young/-1/v.xcs", 0)
    dry = reconcile(store, [], grace=60, dry_run=True)
    assert dry.unfinished.count == 1 and dry.young_unfinished == 1
    assert (store.root / old).exists(), "a dry run removes nothing"
    report = reconcile(store, [], grace=60)
    assert report.unfinished.count == 1 and report.unfinished.sample == [old]
    assert not (store.root / old).exists() and (store.root / young).exists()
    assert report.to_json()["unfinished_uploads"]["younger_than_grace"] == 1


def test_unfinished_uploads_go_after_an_hour_while_objects_keep_the_whole_grace_period(store) -> None:
    engine = engine_for(store)
    row = XComRow(xcom("gone"), engine.serialize(b"v" * 5000, xcom("gone")))
    age(store, 2 * 3600)  # an orphan (its row is not passed) two hours old
    stale = leave_unfinished(store, "d/r1/stale/-1/v.xcs", 2 * 3600)
    report = Reconciler(store, ReconcileOptions(grace_seconds=6 * 3600)).run([], lambda: [])
    assert report.unfinished.sample == [stale] and not (store.root / stale).exists()
    assert report.deleted == 0 and store.key_for(row.value["uri"]) in keys(store)  # within the 6 h grace
    # An explicit bound for unfinished uploads wins over the default hour.
    kept = leave_unfinished(store, "d/r1/kept/-1/v.xcs", 2 * 3600)
    options = ReconcileOptions(grace_seconds=6 * 3600, unfinished_grace_seconds=3 * 3600)
    assert Reconciler(store, options).run([], lambda: []).young_unfinished == 1 and (store.root / kept).exists()


def test_values_in_per_dag_stores_are_live_not_orphans(tmp_path) -> None:
    from xcomstash.stores import RoutedStore

    main, pii = LocalStore(tmp_path / "main"), LocalStore(tmp_path / "pii")
    routed = RoutedStore(main, [("pii_*", pii)])
    engine = Engine(StashConfig(store_url=main.root_uri, threshold=0, read_ahead=False), store=routed)
    rows = [XComRow(c, engine.serialize(b"v" * 5000, c)) for c in (xcom("a", dag="pii_users"), xcom("a", dag="sales"))]
    for s in (main, pii):
        age(s, 3600)
    before = keys(main) | keys(pii)
    report = reconcile(routed, rows)
    assert report.outside_store == 0 and report.deleted == 0
    assert keys(main) | keys(pii) == before
    report = reconcile(routed, rows[1:])  # the pii row is gone: its objects are orphans
    assert report.deleted == 2 and keys(pii) == set()
