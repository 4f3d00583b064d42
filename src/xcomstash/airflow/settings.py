"""Build the engine from Airflow's configuration: the ``[xcomstash]`` section, Airflow
connections for store credentials, and Airflow's serde for inline values."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from functools import cache
from typing import Any

from xcomstash.codecs import StructureConverter
from xcomstash.config import StashConfig
from xcomstash.security.rules import dag_store_urls, parse_dag_policies
from xcomstash.engine import Engine

SECTION = "xcomstash"


def _conf() -> Any:
    """Airflow's configuration object (where it lives depends on the Airflow minor)."""
    from xcomstash.airflow.compat import conf

    return conf()


def read_config() -> tuple[StashConfig, str | None]:
    conf = _conf()
    store_url = conf.get(SECTION, "store_url", fallback="") or ""
    if not store_url:
        home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
        store_url = "file://" + os.path.join(os.path.abspath(home), "xcomstash")
    config = StashConfig(
        store_url=store_url,
        threshold=conf.getint(SECTION, "threshold", fallback=65536),
        compression=conf.get(SECTION, "compression", fallback="zstd") or "zstd",
        compression_level=conf.getint(SECTION, "compression_level", fallback=1),
        hash=conf.get(SECTION, "hash", fallback="blake3") or "blake3",
        exclusive=conf.getboolean(SECTION, "exclusive", fallback=False),
        write_quorum=conf.getint(SECTION, "write_quorum", fallback=0) or None,
        read_order=_read_order(conf.get(SECTION, "read_order", fallback="") or ""),
        dag_stores=dag_store_urls(parse_dag_policies(conf.get(SECTION, "dag_policies", fallback="") or "")),
        previous_store_urls=tuple((conf.get(SECTION, "previous_store_urls", fallback="") or "").split()),
        accept_plain_rows=conf.getboolean(SECTION, "accept_plain_rows", fallback=False),
    )
    cache_dir = conf.get(SECTION, "cache_dir", fallback="") or ""
    if cache_dir.lower() == "off":
        cache_dir = ""
    elif not cache_dir:
        cache_dir = os.path.join(tempfile.gettempdir(), "xcomstash-cache")
    config = dataclasses.replace(
        config,
        cache_dir=cache_dir or None,
        cache_max_bytes=conf.getint(SECTION, "cache_max_bytes", fallback=2 * 1024**3),
        read_ahead=conf.getboolean(SECTION, "read_ahead", fallback=True),
        push_timeout=_seconds(conf.getfloat(SECTION, "push_timeout", fallback=600.0)),
        pull_timeout=_seconds(conf.getfloat(SECTION, "pull_timeout", fallback=600.0)),
        dedup=conf.getboolean(SECTION, "dedup", fallback=True),
    )
    trace_file = conf.get(SECTION, "trace_file", fallback="") or None
    return config, trace_file


def _seconds(value: float) -> float | None:
    """A timeout option: seconds, 0 for none."""
    return value if value > 0 else None


def _read_order(text: str) -> tuple[int, ...] | None:
    """``read_order``: location indexes separated by spaces or commas (empty: as listed)."""
    from xcomstash.errors import ConfigError

    parts = text.replace(",", " ").split()
    if not parts:
        return None
    if not all(p.isdigit() for p in parts):
        raise ConfigError(f"[xcomstash] read_order must be location indexes such as '1 0', got {text!r}")
    return tuple(int(p) for p in parts)


def s3_client_from_connection(conn_id: str | None) -> Any:
    """A boto3 S3 client configured by an Airflow AWS connection (``aws_default`` if ``None``)."""
    from xcomstash.airflow.connections import s3_client
    from xcomstash.stores.locations import StoreLocation

    return s3_client(StoreLocation(kind="s3", conn_id=conn_id))


#: serde's dict keys its serialize refuses in a user's dict, by the names serde gives them
#: (the defaults are their values in every supported Airflow). The other marker keys serde
#: leaves alone, so a dict holding them is still stored as it is.
_SERDE_MARKERS = {"CLASSNAME": "__classname__", "SCHEMA_ID": "__id__"}


def serde_converter() -> StructureConverter:
    import sys

    from xcomstash.airflow.compat import serde

    serialize, deserialize = serde()
    module = sys.modules[serialize.__module__]
    reserved = frozenset(getattr(module, name, default) for name, default in _SERDE_MARKERS.items())
    return StructureConverter(to_structure=serialize, from_structure=deserialize, reserved_keys=reserved)


@cache
def engine() -> Engine:
    """The process-wide engine (built on first use, so importing the backend stays cheap)."""
    from xcomstash.airflow.metrics import metrics_subscribers
    from xcomstash.airflow.security_settings import build_guard
    from xcomstash.stores import open_store

    config, trace_file = read_config()
    from xcomstash.airflow.connections import client_for

    store = open_store(
        config.store_url, clients=client_for, write_quorum=config.write_quorum, read_order=config.read_order,
        dag_stores=config.dag_stores, previous=config.previous_store_urls,
    )
    return Engine(
        config,
        store,
        converter=serde_converter(),
        trace_file=trace_file,
        guard=build_guard(_conf(), store),
        subscribers=metrics_subscribers(_conf()),
    )
