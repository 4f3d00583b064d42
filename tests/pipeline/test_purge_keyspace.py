"""A purge only deletes objects of the XCom whose row is going, even with signing off (a
forged row can claim anything then): its own per-XCom object or a blob of its DAG run named
by the reference's digest. Never another DAG's object, never the audit log."""

from __future__ import annotations

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.observe.audit import AuditEvent, StoreSink
from xcomstash.pipeline.purge import purge_objects
from xcomstash.format.reference import Reference
from xcomstash.stores import LocalStore

A = XComCoordinate("dag_a", "r1", "produce", -1, "return_value")
B = XComCoordinate("dag_b", "r1", "produce", -1, "return_value")


def test_forged_row_pointing_at_another_dags_object_or_the_audit_log_deletes_nothing(tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    engine = Engine(StashConfig(store_url=store.root_uri, threshold=0, dedup=False, read_ahead=False), store=store)
    a_row = engine.serialize(b"victim" * 1000, A)
    sink = StoreSink(store, flush_events=1)
    sink.write(AuditEvent("push", "ok", A.as_dict()))
    audit_key = next(i.key for i in store.list("!audit"))
    before = {i.key for i in store.list()}

    # Unsigned rows of DAG B that claim to be B's own XCom.
    to_a = {**a_row, "xcom": B.as_dict()}
    to_audit = {**a_row, "xcom": B.as_dict(), "uri": store.uri_for(audit_key)}
    assert engine.purge(to_a, B) is False
    assert engine.purge(to_audit, B) is False
    # The same through the batch path retention uses, and through purge_objects directly.
    result = engine.purge_rows([(to_a, B), (to_audit, B)])
    assert result.purged == 0 and len(result.refused) == 2
    direct = purge_objects(store, [(B, Reference.from_json(to_a)), (B, Reference.from_json(to_audit))])
    assert direct.deleted == 0 and len(direct.refused) == 2

    assert {i.key for i in store.list()} == before
    assert engine.deserialize(a_row, A) == b"victim" * 1000
    # The row's own object still goes.
    assert engine.purge(a_row, A) is True
    assert store.head(store.key_for(a_row["uri"])) is None
