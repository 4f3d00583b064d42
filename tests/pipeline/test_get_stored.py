"""Reading an XCom from the store alone (``Engine.get_stored``, ``xcomstash get``): the value
its newest link names or its per-XCom object, verified; damage, a link to other bytes and a
missing value are typed errors; every read is audited as ``get``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.harness.events import Collector

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.errors import IntegrityError, ObjectMissingError
from xcomstash.pipeline.pull import STORE_ONLY
from xcomstash.security.crypto.keyset import Keyset, KeyRing

FRAME = pd.DataFrame({"a": np.arange(20_000), "b": [f"v{i}" for i in range(20_000)]})
COORD = XComCoordinate("etl", "manual__1", "load", -1, "return_value")



def engine_at(root: Path, seen: Collector | None = None, **options) -> Engine:
    config = StashConfig(store_url=f"file://{root}", threshold=0, read_ahead=False, **options)
    return Engine(config, subscribers=[seen] if seen is not None else [])


def test_a_pushed_value_reads_back_from_the_store_alone_and_is_audited(tmp_path: Path) -> None:
    seen = Collector()
    engine = engine_at(tmp_path, seen)
    engine.serialize(FRAME, COORD)
    other = XComCoordinate("etl", "manual__1", "load", 3, "rows")
    engine.serialize(np.arange(1000.0), other)
    assert engine.get_stored(COORD).equals(FRAME)
    assert np.array_equal(engine_at(tmp_path).get_stored(other), np.arange(1000.0))  # a fresh process
    (event,) = [e for e in seen.events if e.op == "get"]
    assert event.outcome == "ok" and event.key_id == STORE_ONLY and event.xcom == COORD


def test_the_newest_value_of_a_retried_task_is_read(tmp_path: Path) -> None:
    engine = engine_at(tmp_path)
    engine.serialize(np.zeros(5000), COORD)
    import time

    time.sleep(0.01)
    engine.serialize(np.ones(5000), COORD)  # the retry's value
    assert engine.get_stored(COORD).sum() == 5000


def test_damage_a_foreign_link_and_a_missing_value_are_errors_never_values(tmp_path: Path) -> None:
    seen = Collector()
    engine = engine_at(tmp_path, seen)
    ref = engine.serialize(FRAME, COORD)
    blob = tmp_path / engine.store.key_for(ref["uri"])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        engine.get_stored(COORD)
    # A link of another XCom planted under this one: the digest it names is not the object's.
    victim = XComCoordinate("etl", "manual__1", "victim", -1, "return_value")
    other = engine.serialize(np.arange(3000), victim)
    fake = tmp_path / COORD.link_key("sha256:" + "0" * 64)
    for link in (tmp_path / COORD.links_prefix()).iterdir():
        link.unlink()
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_text(engine.store.key_for(other["uri"]))
    with pytest.raises(IntegrityError):
        engine.get_stored(COORD)
    with pytest.raises(ObjectMissingError, match="no value"):
        engine.get_stored(XComCoordinate("etl", "manual__1", "never", -1, "return_value"))
    assert [e.outcome for e in seen.events if e.op == "get"] == ["failed", "failed", "failed"]


def test_an_encrypted_value_needs_the_keyset_and_is_bound_to_its_xcom(tmp_path: Path) -> None:
    from xcomstash.security.guard import Guard, SecurityConfig

    keyring = KeyRing({"*": Keyset.generate()})
    secured = lambda: Engine(  # noqa: E731
        StashConfig(store_url=f"file://{tmp_path}", threshold=0, read_ahead=False),
        guard=Guard(SecurityConfig(keyring=keyring)),
    )
    engine = secured()
    engine.serialize(FRAME, COORD)
    assert secured().get_stored(COORD).equals(FRAME)


def test_the_cli_writes_parquet_npy_and_json(tmp_path: Path, capsys) -> None:
    from xcomstash.cli import main

    engine = engine_at(tmp_path / "store")
    engine.serialize(FRAME, COORD)
    engine.serialize(np.arange(50_000.0), XComCoordinate("etl", "manual__1", "arr", -1, "return_value"))
    engine.serialize({"rows": list(range(20_000))}, XComCoordinate("etl", "manual__1", "meta", -1, "stats"))
    url = ["--store-url", f"file://{tmp_path / 'store'}"]
    out = tmp_path / "frame.parquet"
    assert main(["get", "etl", "manual__1", "load", "-o", str(out), *url]) == 0
    assert pd.read_parquet(out).equals(FRAME)
    assert main(["get", "etl", "manual__1", "arr", "-o", str(tmp_path / "a.npy"), *url]) == 0
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.arange(50_000.0))
    capsys.readouterr()
    assert main(["get", "etl", "manual__1", "meta", "stats", "--json", *url]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["type"] == "dict" and described["length"] == 1
    assert main(["get", "etl", "manual__1", "nothing", *url]) == 1
    assert "no value" in capsys.readouterr().err
