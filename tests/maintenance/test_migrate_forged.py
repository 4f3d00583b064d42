"""migrate with a forged common.io row: a path to another XCom's common.io object, written
into a row through the REST API, is neither read into that row nor deleted."""

from __future__ import annotations

import json
from pathlib import Path

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.maintenance.migrate import Journal, LegacyAccess, Migrator
from xcomstash.maintenance.rows import XComRow
from xcomstash.stores import LocalStore

A = XComCoordinate("dag_a", "r1", "produce", -1, "return_value")
B = XComCoordinate("dag_b", "r1", "produce", -1, "return_value")


def test_forged_common_io_row_is_refused_and_deletes_nothing(tmp_path) -> None:
    base = tmp_path / "cio"
    victim = base / "dag_a" / "r1" / "produce" / "0b1c.json"
    victim.parent.mkdir(parents=True)
    victim.write_text(json.dumps({"secret": "of dag_a"}))
    legacy = LegacyAccess(
        path_of=lambda v, xcom: Path(v[len("file://"):]) if isinstance(v, str) and v.startswith(f"file://{base}") else None,
        read=lambda p: json.loads(Path(p).read_text()),
        delete=lambda p: Path(p).unlink(missing_ok=True),
    )
    store = LocalStore(tmp_path / "store")
    engine = Engine(StashConfig(store_url=store.root_uri, threshold=0, read_ahead=False), store=store)
    replaced: list = []
    migrator = Migrator(
        engine, to_value=lambda v: v, replace=lambda c, old, new: replaced.append((c, new)) or True,
        get_value=lambda c: (True, None), legacy=legacy, delete_legacy=True, journal=Journal(tmp_path / "j"),
    )
    report = migrator.run([XComRow(B, f"file://{victim}")])
    assert report.refused == 1 and report.migrated_common_io == 0
    assert victim.exists() and replaced == [] and list(store.list()) == []
    # The same object from its own row migrates (and is deleted once its row switched).
    report = migrator.run([XComRow(A, f"file://{victim}")])
    assert report.migrated_common_io == 1 and not victim.exists()
