"""The public surface is small and deliberate: a name added to or dropped from it is a
decision, so this test has to be edited with it."""

from __future__ import annotations

import xcomstash
import xcomstash.engine
import xcomstash.stores

PACKAGE = {
    "Codec",
    "ConfigError",
    "DecodeError",
    "Engine",
    "IntegrityError",
    "InvalidReferenceError",
    "ObjectMissingError",
    "ReadError",
    "Reference",
    "Restricted",
    "StashConfig",
    "StoreError",
    "StoreReadError",
    "StoreUnavailableError",
    "UnsupportedTypeError",
    "XComCoordinate",
    "XComStashError",
    "register_codec",
}


def test_package_exports_exactly_the_documented_names() -> None:
    assert set(xcomstash.__all__) == PACKAGE
    assert all(hasattr(xcomstash, name) for name in xcomstash.__all__)


def test_engine_module_exports_only_the_engine() -> None:
    assert xcomstash.engine.__all__ == ["Engine"]


def test_engine_offers_push_pull_purge_repair_and_lifetime_and_nothing_else() -> None:
    public = {name for name in vars(xcomstash.engine.Engine) if not name.startswith("_")}
    assert public == {
        "serialize", "deserialize", "deserialize_many", "read_table",  # push, pull
        "preview",  # pull for people: what the Airflow UI shows of a value
        "get_stored",  # pull without the row: a notebook or debugging shell (xcomstash get)
        "purge", "purge_rows", "observe_deletion",  # purge (maintenance: many rows; orphans audited)
        "repair_rows",  # maintenance: copies to the locations of a replicated store that lack a value
        "move_rows",  # maintenance: values out of previous_store_urls into store_url (xcomstash move)
        "flush", "close",
    }
