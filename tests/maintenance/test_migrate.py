"""Migration on the engine alone, interrupted at every step of every row and resumed.

The xcom table is a dict (the compare-and-set the Airflow side does in SQL is the same
check); common.io objects are JSON files. After each interrupted attempt and the final one,
every value must still be readable (old row or new row), and at the end every row is a
reference, the store holds exactly the referenced objects and the legacy files are gone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.maintenance.migrate import STEPS, Journal, LegacyAccess, Migrator
from xcomstash.maintenance.rows import XComRow
from xcomstash.stores import LocalStore


class Crash(Exception):
    pass


def coordinate(i: int) -> XComCoordinate:
    return XComCoordinate("d", "r", f"t{i}", -1, "return_value")


VALUES = {i: {"row": i, "payload": [i] * (200 + i)} for i in range(6)}


def fresh(tmp_path: Path):
    legacy_dir = tmp_path / "cio"
    legacy_dir.mkdir()
    table: dict[XComCoordinate, object] = {}
    for i, value in VALUES.items():
        if i % 2:  # common.io row: a path to a JSON file
            # where common.io writes: <base>/<dag>/<run>/<task>/<uuid>.json
            path = legacy_dir / "d" / "r" / f"t{i}" / f"{i}.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(value))
            table[coordinate(i)] = f"file://{path}"
        else:  # BaseXCom row: the value inline
            table[coordinate(i)] = value
    store = LocalStore(tmp_path / "store")
    engine = Engine(StashConfig(store_url=store.root_uri, threshold=0, read_ahead=False), store=store)
    return table, store, engine, legacy_dir


def migrator(table, engine, legacy_dir: Path, journal: Journal, fault) -> Migrator:
    def replace(c, expected, new):
        if table.get(c) != expected:
            return False
        table[c] = new
        return True

    def path_of(value, xcom):
        return Path(value[len("file://"):]) if isinstance(value, str) and value.startswith(f"file://{legacy_dir}") else None

    return Migrator(
        engine,
        to_value=lambda stored: stored,
        replace=replace,
        get_value=lambda c: (c in table, table.get(c)),
        legacy=LegacyAccess(path_of=path_of, read=lambda p: json.loads(p.read_text()),
                            delete=lambda p: p.unlink(missing_ok=True)),
        delete_legacy=True,
        journal=journal,
        fault=fault,
    )


def read_all(table, engine) -> dict[int, object]:
    out = {}
    for i in VALUES:
        stored = table[coordinate(i)]
        if isinstance(stored, str):
            out[i] = json.loads(Path(stored[len("file://"):]).read_text())
        else:
            out[i] = engine.deserialize(stored)
    return out


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("at", [1, 2, 3])
def test_crash_at_any_step_then_resume(tmp_path, step: str, at: int) -> None:
    table, store, engine, legacy_dir = fresh(tmp_path)
    journal = Journal(tmp_path / "journal")
    seen = {"n": 0}

    def fault(name: str) -> None:
        if name == step:
            seen["n"] += 1
            if seen["n"] == at:
                raise Crash(name)

    with pytest.raises(Crash):
        migrator(table, engine, legacy_dir, journal, fault).run(
            [XComRow(c, v) for c, v in list(table.items())]
        )
    assert read_all(table, engine) == VALUES, "every value readable right after the crash"

    report = migrator(table, engine, legacy_dir, journal, lambda name: None).run(
        [XComRow(c, v) for c, v in list(table.items())]
    )
    assert report.failed == report.missing == 0
    assert read_all(table, engine) == VALUES
    assert all(isinstance(v, dict) and "__xcomstash__" in v for v in table.values())
    referenced = {store.key_for(v["uri"]) for v in table.values()}
    links = {c.link_key(v["digest"]) for c, v in table.items()}
    assert {i.key for i in store.list()} == referenced | links, "no duplicate left by the crashed attempt"
    assert [p for p in legacy_dir.rglob("*") if p.is_file()] == [], "legacy objects deleted, also the one the crash left"
    assert not journal.path.exists()


@pytest.mark.parametrize("dry_run", [True, False])
def test_exclusive_migration_keeps_operator_link_rows_and_reports_those_that_are_not_links(tmp_path, dry_run) -> None:
    """Airflow's API server builds extra links from ``_link_*`` rows: a reference there would
    break the link, so exclusive mode keeps them plain, and migrate leaves them so."""
    store = LocalStore(tmp_path / "store")
    engine = Engine(StashConfig(store_url=store.root_uri, exclusive=True, read_ahead=False), store=store)
    link = XComCoordinate("d", "r", "trigger", -1, "_link_TriggerDagRunLink")
    not_a_link = XComCoordinate("d", "r", "other", -1, "_link_Big")
    plain = XComCoordinate("d", "r", "trigger", -1, "trigger_run_id")
    table: dict[XComCoordinate, object] = {
        link: "/dags/target/runs/manual__1", not_a_link: "x" * 10_000, plain: "manual__1",
    }
    before = dict(table)

    def replace(c, expected, new):
        table[c] = new
        return True

    report = Migrator(
        engine, to_value=lambda stored: stored, replace=replace, get_value=lambda c: (c in table, table.get(c)),
        dry_run=dry_run,
    ).run([XComRow(c, v) for c, v in before.items()])
    assert (report.migrated_basexcom, report.inline_kept, report.failed) == (1, 1, 1)
    (problem,) = report.problems
    assert problem["xcom"]["key"] == "_link_Big" and "not a link" in problem["problem"]
    assert table[link] == before[link] and table[not_a_link] == before[not_a_link]
    if not dry_run:
        assert "__xcomstash__" in table[plain] and engine.deserialize(table[plain], plain) == "manual__1"
