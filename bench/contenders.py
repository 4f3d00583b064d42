"""The contenders, at the XCom backend API level.

Each contender turns a value into the string that would go into the xcom table's value column
(``push``) and back (``pull``). For the Airflow backends that row value goes through
``json.dumps``/``json.loads``, as it does on its way to and from the database.

- ``xcomstash``: ``XComStashBackend.serialize_value`` / ``deserialize_value`` (defaults:
  threshold 64 KiB, zstd level 3).
- ``common.io``: ``XComObjectStorageBackend`` with ``xcom_objectstorage_threshold=0`` (every
  value to the store), no compression (its default).
- ``BaseXCom``: Airflow's own backend, serde structure in the row. Only for payloads that fit a
  database row (nominal size <= 100 MB; larger is reported ``n/a``).
- ``baseline``: the physical floor, no Airflow: Arrow IPC stream for DataFrames, ``.npy`` for
  arrays (both to a file in the same store directory, or through the store's raw client from
  :mod:`bench.stores`), ``json.dumps``/``json.loads`` for small values.
- ``raw`` (not here: ``bench.case``): the store's raw client moving the bytes xcomstash stored.

Nothing here imports Airflow at module level: the case runner sets ``AIRFLOW_HOME`` and the
``AIRFLOW__*`` variables first (see :func:`child_env`).
"""

from __future__ import annotations

import io
import json
import os
from collections import namedtuple
from typing import Any

from bench import stores

CONTENDERS = ("xcomstash", "common.io", "BaseXCom", "baseline", "raw")
#: BaseXCom only runs where the value fits a database row.
BASEXCOM_MAX_MB = 100
DAG_ID = "bench"
RUN_ID = "manual__2026-11-23T00:00:00+00:00"

Row = namedtuple("Row", "value")


def child_env(spec: dict[str, Any]) -> dict[str, str]:
    """Environment for one case process: its own AIRFLOW_HOME, the contender's settings and
    what the store needs (its connections, an emulator endpoint)."""
    store = spec["store"]
    reach = stores.access(store)
    env = {
        "AIRFLOW_HOME": spec["airflow_home"],
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__XCOM_BACKEND": {
            "xcomstash": "xcomstash.airflow.backend.XComStashBackend",
            "common.io": "airflow.providers.common.io.xcom.backend.XComObjectStorageBackend",
        }.get(spec["contender"], "airflow.sdk.bases.xcom.BaseXCom"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:///" + os.path.join(spec["airflow_home"], "airflow.db"),
    }
    if spec["contender"] == "xcomstash":
        env["AIRFLOW__XCOMSTASH__STORE_URL"] = reach.url
        # The read cache for remote stores defaults to a shared $TMPDIR/xcomstash-cache keyed by
        # digest; payloads (and so digests) repeat from run to run, so give every case process a
        # cold cache of its own, as on a worker that has not read these objects before.
        env["AIRFLOW__XCOMSTASH__CACHE_DIR"] = os.path.join(spec["airflow_home"], "xcomstash-cache")
        # The servers listen on plain HTTP on 127.0.0.1; xcomstash refuses plain HTTP otherwise.
        env["AIRFLOW__XCOMSTASH__ALLOW_HTTP_ENDPOINTS"] = "True"
        # References are signed; a shared store needs keys provisioned (the run's keyset).
        if spec.get("keyset"):
            env["AIRFLOW__XCOMSTASH__KEYSETS"] = "file:" + spec["keyset"]
    if spec["contender"] == "common.io":
        env["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH"] = reach.url
        env["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD"] = "0"
        env["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_COMPRESSION"] = ""
    env.update(reach.env)
    return env


# ----------------------------------------------------------------------- contenders


class Contender:
    name = ""

    def __init__(self, store: dict[str, Any]) -> None:
        self.store = store

    def push(self, value: Any, task_id: str, map_index: int = -1, dag_id: str = DAG_ID) -> str:
        raise NotImplementedError

    def pull(self, row: str) -> Any:
        raise NotImplementedError

    def pull_many(self, rows: list[str]) -> list[Any]:
        return [self.pull(r) for r in rows]


class _AirflowBackend(Contender):
    """Any BaseXCom subclass: serialize_value -> json.dumps (push); json.loads -> deserialize_value."""

    backend: Any = None

    def push(self, value: Any, task_id: str, map_index: int = -1, dag_id: str = DAG_ID) -> str:
        stored = self.backend.serialize_value(
            value, key="return_value", dag_id=dag_id, run_id=RUN_ID, task_id=task_id, map_index=map_index
        )
        return json.dumps(stored)

    def pull(self, row: str) -> Any:
        return self.backend.deserialize_value(Row(json.loads(row)))


class XComStash(_AirflowBackend):
    name = "xcomstash"

    def __init__(self, store: dict[str, Any]) -> None:
        super().__init__(store)
        from xcomstash.airflow.backend import XComStashBackend

        self.backend = XComStashBackend
        self.batch_helper = _find_batch_helper(XComStashBackend)

    def pull_many(self, rows: list[str]) -> list[Any]:
        if self.batch_helper is None:
            return super().pull_many(rows)
        # Like get_all: the helper takes the rows' stored values, as the API returns them.
        return list(self.batch_helper([json.loads(r) for r in rows]))


def _find_batch_helper(backend: Any) -> Any:
    """The classmethod behind the backend's get_all, taking a list of stored row values, if the
    backend has one (xcomstash: ``deserialize_many``). get_all itself fetches the rows through the
    Task SDK supervisor, which does not exist in-process, so the bench calls the helper."""
    for name in ("deserialize_values", "deserialize_many", "deserialize_all"):
        helper = getattr(backend, name, None)
        if callable(helper) and name in vars(backend):  # defined by the backend itself
            return helper
    return None


class CommonIO(_AirflowBackend):
    name = "common.io"

    def __init__(self, store: dict[str, Any]) -> None:
        super().__init__(store)
        from airflow.providers.common.io.xcom.backend import XComObjectStorageBackend

        self.backend = XComObjectStorageBackend


class BaseXComContender(_AirflowBackend):
    name = "BaseXCom"

    def __init__(self, store: dict[str, Any]) -> None:
        super().__init__(store)
        from airflow.sdk.bases.xcom import BaseXCom

        self.backend = BaseXCom


class Baseline(Contender):
    """The physical floor: Arrow IPC / .npy to the same store, json for small values.

    Local: a file in the store directory, read back memory-mapped. Remote: the store's raw
    client (:mod:`bench.stores`), as the ``raw`` contender uses it.
    """

    name = "baseline"

    def __init__(self, store: dict[str, Any]) -> None:
        super().__init__(store)
        self.client = None if store["kind"] == "local" else stores.raw_client(store)

    def push(self, value: Any, task_id: str, map_index: int = -1, dag_id: str = DAG_ID) -> str:
        from bench.payloads import _is

        key = f"{dag_id}/{task_id}/{map_index}"
        if _is(value, "pandas"):
            return self._put("arrow", key + ".arrow", lambda f: _write_ipc(value, f))
        if _is(value, "numpy"):
            import numpy as np

            return self._put("npy", key + ".npy", lambda f: np.save(f, value))
        return json.dumps(value)

    def pull(self, row: str) -> Any:
        stored = json.loads(row)
        if not (isinstance(stored, dict) and "__bench_ref__" in stored):
            return stored
        fmt, loc = stored["__bench_ref__"], stored["loc"]
        if fmt == "arrow":
            import pyarrow as pa

            if self.client is None:
                with pa.memory_map(loc) as source:
                    return pa.ipc.open_stream(source).read_all().to_pandas()
            return pa.ipc.open_stream(pa.py_buffer(self.client.get(loc, stored["size"]))).read_all().to_pandas()
        import numpy as np

        if self.client is None:
            return np.load(loc, allow_pickle=False)
        return np.load(io.BytesIO(self.client.get(loc, stored["size"])), allow_pickle=False)

    def _put(self, fmt: str, key: str, write: Any) -> str:
        if self.client is None:
            path = os.path.join(self.store["root"], key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                write(f)
            return json.dumps({"__bench_ref__": fmt, "loc": path, "size": os.path.getsize(path)})
        buf = io.BytesIO()
        write(buf)
        self.client.put(key, buf.getbuffer())
        return json.dumps({"__bench_ref__": fmt, "loc": key, "size": buf.tell()})


def _write_ipc(df: Any, sink: Any) -> None:
    import pyarrow as pa

    table = pa.Table.from_pandas(df)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def make(name: str, store: dict[str, Any]) -> Contender:
    return {
        "xcomstash": XComStash,
        "common.io": CommonIO,
        "BaseXCom": BaseXComContender,
        "baseline": Baseline,
    }[name](store)
