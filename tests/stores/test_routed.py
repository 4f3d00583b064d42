"""Per-DAG stores: a DAG pattern's values are written to, read from and deleted in its own
store; values written before the route existed stay readable; nothing outside the configured
stores is ever read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.errors import ConfigError, InvalidReferenceError
from xcomstash.stores import LocalStore, RoutedStore
from xcomstash.testing import StoreContract

PII = XComCoordinate("pii_users", "run_1", "extract", -1, "return_value")
PLAIN = XComCoordinate("sales", "run_1", "extract", -1, "return_value")
VALUE = np.arange(100_000, dtype=np.int64)


def files(root: Path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs) if root.exists() else []


class TestRoutedStoreContract(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> RoutedStore:
        return RoutedStore(LocalStore(tmp_path / "main"), [("pii_*", LocalStore(tmp_path / "pii"))])

    @pytest.fixture
    def raw_names(self, tmp_path: Path) -> Callable[[], list[str]]:
        return lambda: sorted(files(tmp_path / "main") + files(tmp_path / "pii"))


def engine(tmp_path: Path, **extra) -> Engine:
    config = StashConfig(
        store_url=f"file://{tmp_path / 'main'}", threshold=0, read_ahead=False,
        dag_stores=(("pii_*", f"file://{tmp_path / 'pii'}"),), **extra,
    )
    return Engine(config)


def test_a_matching_dag_is_stored_only_in_its_own_store(tmp_path) -> None:
    e = engine(tmp_path)
    pii_row, plain_row = e.serialize(VALUE, PII), e.serialize(VALUE, PLAIN)
    assert pii_row["uri"].startswith(f"file://{tmp_path / 'pii'}/")
    assert plain_row["uri"].startswith(f"file://{tmp_path / 'main'}/")
    assert not any(name.startswith("pii_users") for name in files(tmp_path / "main"))
    assert all(name.startswith("pii_users") for name in files(tmp_path / "pii"))
    assert np.array_equal(e.deserialize(pii_row, PII), VALUE)
    assert np.array_equal(e.deserialize(plain_row, PLAIN), VALUE)


def test_a_purge_deletes_in_the_dags_store(tmp_path) -> None:
    e = engine(tmp_path)
    row = e.serialize(VALUE, PII)
    assert e.purge(row, PII)
    assert [n for n in files(tmp_path / "pii") if n.endswith(".xcs")] == []


def test_a_value_written_before_its_dag_got_a_store_stays_readable(tmp_path) -> None:
    before = Engine(StashConfig(store_url=f"file://{tmp_path / 'main'}", threshold=0, read_ahead=False))
    old_row = before.serialize(VALUE, PII)
    after = engine(tmp_path)
    assert np.array_equal(after.deserialize(old_row, PII), VALUE)
    assert after.purge(old_row, PII)
    assert [n for n in files(tmp_path / "main") if n.endswith(".xcs")] == []


def test_a_reference_outside_every_configured_store_is_refused(tmp_path) -> None:
    e = engine(tmp_path)
    row = e.serialize(VALUE, PLAIN)
    elsewhere = LocalStore(tmp_path / "elsewhere")
    with pytest.raises(InvalidReferenceError, match="outside the configured stores"):
        e.store.key_for(elsewhere.uri_for("sales/run_1/x.xcs"))
    with pytest.raises(InvalidReferenceError):
        e.deserialize({**row, "uri": row["uri"].replace("/main/", "/elsewhere/")}, PLAIN)


def test_an_entry_without_a_store_keeps_its_dags_in_the_default_store(tmp_path) -> None:
    main, pii = LocalStore(tmp_path / "main"), LocalStore(tmp_path / "pii")
    store = RoutedStore(main, [("pii_public*", None), ("pii_*", pii)])
    assert store.store_for_dag("pii_public_stats") is main
    assert store.store_for_dag("pii_users") is pii
    assert store.store_for_dag("sales") is main


def test_nested_or_shared_roots_are_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="nest"):
        RoutedStore(LocalStore(tmp_path / "main"), [("pii_*", LocalStore(tmp_path / "main" / "pii"))])
    with pytest.raises(ConfigError):
        StashConfig(store_url=f"file://{tmp_path}", dag_stores=(("pii_*", "ftp://nowhere"),))


def test_dag_policies_store_url_is_validated_and_routed() -> None:
    from xcomstash.security.rules import dag_store_urls, parse_dag_policies

    rules = parse_dag_policies('[{"dags": "pii_*", "store_url": "s3://pii/xcom"}, {"dags": "x", "read_scope": "dag"}]')
    assert dag_store_urls(rules) == (("pii_*", "s3://pii/xcom"), ("x", None))
    assert dag_store_urls(parse_dag_policies('[{"dags": "x", "read_scope": "dag"}]')) == ()
    with pytest.raises(ConfigError, match=r"dag_policies\[0\]"):
        parse_dag_policies('[{"dags": "pii_*", "store_url": "ftp://x"}]')
