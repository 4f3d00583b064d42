"""The stores the bench runs on: how each is started, how the Airflow backends reach it, and
its own ("raw") client.

A store is one :class:`StoreSpec` in :data:`SPECS`:

- ``start(workdir) -> (server, store)``: starts the server once per run (``None`` for the
  local store); ``store`` is a JSON-able dict handed to every case process of that store.
- ``access(store) -> Access``: the store URL the Airflow backends are configured with and the
  environment they need (``AIRFLOW_CONN_*``, an emulator endpoint).
- ``raw(store) -> RawClient``: the store's own client, used the way a competent user would:
  ``put`` / ``get`` of one object (the ``raw`` contender and the ``baseline``), plus ``usage``
  and ``clear`` for the orchestrator's accounting.

A replicated store (``members``) has no server of its own: its store dict lists its members'
dicts, its URL is their URLs separated by spaces, and its raw client uploads to every member at
once and downloads from the first.

Adding a store is one more entry: a starter, an access builder and a raw client.
Nothing here imports Airflow.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

MIB = 1024 * 1024
#: The bucket (S3, GCS) every case writes under; each case gets a prefix of its own.
BUCKET = "bench"
S3_KEYS = ("benchkey", "benchsecret")
#: Connection ids of the case processes (``s3://bench_s3@bench/...``).
S3_CONN = "bench_s3"
GCS_CONN = "bench_gcs"
REDIS_CONN = "bench_redis"
AZURE_CONN = "bench_azure"
GCS_PROJECT = "test"


@dataclass(frozen=True)
class Access:
    """How an Airflow backend reaches a store: its URL and the environment it needs."""

    url: str
    env: dict[str, str] = field(default_factory=dict)


class RawClient(Protocol):
    """A store's own client. Keys are relative to the store's prefix."""

    #: What ``put`` / ``get`` do, for the report.
    how: str

    def put(self, key: str, data: bytes | memoryview) -> None: ...

    def get(self, key: str, size: int) -> bytes | memoryview | bytearray: ...

    def usage(self, sub: str) -> tuple[int, int]:
        """(objects, bytes) under ``<prefix>/<sub>/``."""
        ...

    def clear(self) -> None:
        """Delete everything under the prefix."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class StoreSpec:
    name: str
    title: str
    access: Callable[[dict[str, Any]], Access]
    raw: Callable[[dict[str, Any]], RawClient]
    #: Starts the store's server; None: nothing to start (local) or a replicated store.
    start: Callable[[Path], tuple[Any, dict[str, Any]]] | None = None
    #: A replicated store: the stores it writes to (the first is the one it reads from).
    members: tuple[str, ...] = ()
    #: Why common.io cannot run on this store (None: it can).
    common_io_na: Callable[[], str | None] = lambda: None


# ------------------------------------------------------------------------------ local


def _local_access(store: dict[str, Any]) -> Access:
    return Access("file://" + store["root"])


class LocalRaw:
    how = "write a file / read it back (same directory, same disk)"

    def __init__(self, store: dict[str, Any]) -> None:
        self.root = store["root"]

    def put(self, key: str, data: bytes | memoryview) -> None:
        path = os.path.join(self.root, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    def get(self, key: str, size: int) -> bytes:
        with open(os.path.join(self.root, key), "rb") as f:
            return f.read()

    def usage(self, sub: str) -> tuple[int, int]:
        count = total = 0
        for dirpath, _dirs, files in os.walk(os.path.join(self.root, sub)):
            for name in files:
                count += 1
                total += os.path.getsize(os.path.join(dirpath, name))
        return count, total

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------- s3


def _start_s3(workdir: Path) -> tuple[Any, dict[str, Any]]:
    from tests.harness.servers import start_seaweedfs

    server = start_seaweedfs(workdir / "seaweedfs", access_key=S3_KEYS[0], secret_key=S3_KEYS[1], bucket=BUCKET)
    return server, {"kind": "s3", "endpoint": server.endpoint_url, "bucket": BUCKET,
                    "access_key": S3_KEYS[0], "secret_key": S3_KEYS[1], "prefix": ""}


def _s3_access(store: dict[str, Any]) -> Access:
    conn = {
        "conn_type": "aws",
        "login": store["access_key"],
        "password": store["secret_key"],
        "extra": {
            "endpoint_url": store["endpoint"],
            "region_name": "us-east-1",
            "config_kwargs": {
                "connect_timeout": 5,
                "read_timeout": 120,
                "retries": {"max_attempts": 3, "mode": "standard"},
            },
        },
    }
    return Access(f"s3://{S3_CONN}@{store['bucket']}/{store['prefix']}",
                  {"AIRFLOW_CONN_" + S3_CONN.upper(): json.dumps(conn)})


def s3_client(store: dict[str, Any]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=store["endpoint"],
        aws_access_key_id=store["access_key"],
        aws_secret_access_key=store["secret_key"],
        region_name="us-east-1",
        config=Config(
            connect_timeout=5,
            read_timeout=120,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"},
            max_pool_connections=16,
        ),
    )


class S3Raw:
    """boto3: an object up to 8 MiB is one ``put_object`` / ``get_object`` (what the managed
    transfer would do anyway, minus its thread pool and HEAD); larger ones the managed transfer
    (``upload_fileobj`` / ``download_fileobj``, boto3's defaults: 8 MiB parts, 10 threads)."""

    how = "boto3 upload_fileobj / download_fileobj (managed transfer: 8 MiB parts, 10 threads)"
    SINGLE_REQUEST_MAX = 8 * MIB

    def __init__(self, store: dict[str, Any]) -> None:
        from boto3.s3.transfer import TransferConfig

        self.client = s3_client(store)
        self.bucket = store["bucket"]
        self.prefix = store["prefix"]
        self.transfer = TransferConfig()

    def put(self, key: str, data: bytes | memoryview) -> None:
        name = f"{self.prefix}/{key}"
        if len(data) <= self.SINGLE_REQUEST_MAX:
            self.client.put_object(Bucket=self.bucket, Key=name, Body=bytes(data))
        else:
            self.client.upload_fileobj(io.BytesIO(data), self.bucket, name, Config=self.transfer)

    def get(self, key: str, size: int) -> bytes | memoryview:
        name = f"{self.prefix}/{key}"
        if size <= self.SINGLE_REQUEST_MAX:
            return self.client.get_object(Bucket=self.bucket, Key=name)["Body"].read()
        buf = io.BytesIO()
        self.client.download_fileobj(self.bucket, name, buf, Config=self.transfer)
        return buf.getbuffer()

    def _pages(self, prefix: str) -> Any:
        return self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)

    def usage(self, sub: str) -> tuple[int, int]:
        count = total = 0
        for page in self._pages(f"{self.prefix}/{sub}/"):
            for obj in page.get("Contents", []):
                count += 1
                total += obj["Size"]
        return count, total

    def clear(self) -> None:
        for page in self._pages(self.prefix + "/"):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})

    def close(self) -> None:
        self.client.close()


# -------------------------------------------------------------------------------- gcs


def _start_gcs(workdir: Path) -> tuple[Any, dict[str, Any]]:
    from tests.harness.gcs_server import start_fake_gcs

    server = start_fake_gcs(workdir / "fake-gcs", bucket=BUCKET)
    return server, {"kind": "gcs", "endpoint": server.endpoint, "bucket": BUCKET, "prefix": ""}


def _gcs_access(store: dict[str, Any]) -> Access:
    # The emulator is anonymous: the connection only names the project. google-cloud-storage
    # (and so xcomstash's gcs_client) sends every request to STORAGE_EMULATOR_HOST.
    conn = {"conn_type": "google_cloud_platform", "extra": {"project": GCS_PROJECT}}
    return Access(
        f"gs://{GCS_CONN}@{store['bucket']}/{store['prefix']}",
        {"AIRFLOW_CONN_" + GCS_CONN.upper(): json.dumps(conn), "STORAGE_EMULATOR_HOST": store["endpoint"]},
    )


def _gcs_common_io_na() -> str | None:
    import importlib.util

    if importlib.util.find_spec("gcsfs") is None:
        return "common.io reaches gs:// through gcsfs, which is not installed"
    return "the bench does not configure gcsfs for the emulator"


class GCSRaw:
    """google-cloud-storage with its defaults: ``upload_from_file`` (one request up to 8 MiB,
    else a resumable upload in 100 MiB chunks) and ``download_to_file`` (one streamed GET),
    both with the library's checksums."""

    how = "google-cloud-storage blob.upload_from_file / blob.download_to_file (library defaults)"

    def __init__(self, store: dict[str, Any]) -> None:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        self.client = storage.Client(
            project=GCS_PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": store["endpoint"]}
        )
        self.bucket = self.client.bucket(store["bucket"])
        self.prefix = store["prefix"]

    def put(self, key: str, data: bytes | memoryview) -> None:
        self.bucket.blob(f"{self.prefix}/{key}").upload_from_file(io.BytesIO(data), size=len(data))

    def get(self, key: str, size: int) -> memoryview:
        buf = io.BytesIO()
        self.bucket.blob(f"{self.prefix}/{key}").download_to_file(buf)
        return buf.getbuffer()

    def usage(self, sub: str) -> tuple[int, int]:
        count = total = 0
        for blob in self.client.list_blobs(self.bucket, prefix=f"{self.prefix}/{sub}/"):
            count += 1
            total += blob.size or 0
        return count, total

    def clear(self) -> None:
        for blob in self.client.list_blobs(self.bucket, prefix=self.prefix + "/"):
            blob.delete()

    def close(self) -> None:
        self.client.close()


# ------------------------------------------------------------------------------ redis


def _start_redis(workdir: Path) -> tuple[Any, dict[str, Any]]:
    from tests.harness.servers import LOOPBACK, start_redis

    server = start_redis(workdir / "redis")
    return server, {"kind": "redis", "host": LOOPBACK, "port": server.port, "db": 0, "prefix": ""}


def _redis_access(store: dict[str, Any]) -> Access:
    conn = {"conn_type": "redis", "host": store["host"], "port": store["port"], "extra": {"db": store["db"]}}
    return Access(f"redis://{REDIS_CONN}@/{store['prefix']}", {"AIRFLOW_CONN_" + REDIS_CONN.upper(): json.dumps(conn)})


class RedisRaw:
    """redis-py: the value in 4 MiB string keys ``<key>/<n>``, SET (upload) and GET (download)
    pipelined 8 chunks per round trip, on one connection."""

    how = "redis-py SET / GET of 4 MiB chunks, pipelined 8 per round trip"
    CHUNK = 4 * MIB
    BATCH = 8

    def __init__(self, store: dict[str, Any]) -> None:
        import redis

        self.client = redis.Redis(host=store["host"], port=store["port"], db=store["db"],
                                  socket_timeout=120, socket_connect_timeout=5)
        self.prefix = store["prefix"]

    def _chunks(self, size: int) -> list[tuple[int, int]]:
        return [(i, min(i + self.CHUNK, size)) for i in range(0, size, self.CHUNK)] or [(0, 0)]

    def put(self, key: str, data: bytes | memoryview) -> None:
        view = memoryview(data)
        chunks = self._chunks(len(view))
        for first in range(0, len(chunks), self.BATCH):
            pipe = self.client.pipeline(transaction=False)
            for n, (start, end) in enumerate(chunks[first : first + self.BATCH], start=first):
                pipe.set(f"{self.prefix}/{key}/{n}", view[start:end])
            pipe.execute()

    def get(self, key: str, size: int) -> bytearray:
        out = bytearray(size)
        chunks = self._chunks(size)
        for first in range(0, len(chunks), self.BATCH):
            batch = chunks[first : first + self.BATCH]
            pipe = self.client.pipeline(transaction=False)
            for n in range(first, first + len(batch)):
                pipe.get(f"{self.prefix}/{key}/{n}")
            for (start, end), value in zip(batch, pipe.execute()):
                if value is None or len(value) != end - start:
                    raise RuntimeError(f"chunk {start}-{end} of {key} missing or short")
                out[start:end] = value
        return out

    def _scan(self, pattern: str, kind: str) -> Any:
        return self.client.scan_iter(match=pattern, count=1000, _type=kind)

    def usage(self, sub: str) -> tuple[int, int]:
        """xcomstash's objects by their manifests (their chunks live under ``!chunks/``, next to
        the warm-up's), the bench's own chunk keys by their length."""
        from xcomstash.stores.redis import RedisStore

        store = RedisStore(self.client, self.prefix)
        try:
            infos = list(store.list(sub))
        finally:
            store.close()
        count, total = len(infos), sum(i.size for i in infos)
        for name in self._scan(f"{self.prefix}/{sub}/*", "string"):
            count += 1
            total += self.client.strlen(name)
        return count, total

    def clear(self) -> None:
        batch: list[bytes] = []
        for name in self.client.scan_iter(match=f"{self.prefix}/*", count=1000):
            batch.append(name)
            if len(batch) >= 1000:
                self.client.unlink(*batch)
                batch = []
        if batch:
            self.client.unlink(*batch)

    def close(self) -> None:
        self.client.close()


# ------------------------------------------------------------------------- replicated


def _replicated_access(store: dict[str, Any]) -> Access:
    parts = [access(member) for member in store["members"]]
    env: dict[str, str] = {}
    for part in parts:
        env.update(part.env)
    return Access(" ".join(part.url for part in parts), env)


class ReplicatedRaw:
    """Each member's raw client: upload to all of them in parallel, download from the first."""

    def __init__(self, store: dict[str, Any]) -> None:
        self.members = [raw_client(member) for member in store["members"]]
        names = " + ".join(m["kind"] for m in store["members"])
        self.how = f"upload to {names} in parallel (each member's raw client), download from {store['members'][0]['kind']}"
        self._pool = ThreadPoolExecutor(max_workers=len(self.members), thread_name_prefix="bench-raw-replica")

    def put(self, key: str, data: bytes | memoryview) -> None:
        futures = [self._pool.submit(member.put, key, data) for member in self.members]
        for future in futures:
            future.result()

    def get(self, key: str, size: int) -> Any:
        return self.members[0].get(key, size)

    def usage(self, sub: str) -> tuple[int, int]:
        """Every copy: the objects and bytes of all members together."""
        parts = [member.usage(sub) for member in self.members]
        return sum(p[0] for p in parts), sum(p[1] for p in parts)

    def clear(self) -> None:
        for member in self.members:
            member.clear()

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        for member in self.members:
            member.close()


# ------------------------------------------------------------------------------ azure


def _start_azure(workdir: Path) -> tuple[Any, dict[str, Any]]:
    from tests.harness.azurite_server import start_azurite

    server = start_azurite(workdir / "azurite", container=BUCKET, memory_limit_mb=4096)  # a 1 GB case and its raw copy
    return server, {"kind": "azure", "port": server.port, "container": BUCKET, "prefix": ""}


def _azure_connection_string(store: dict[str, Any]) -> str:
    from tests.harness.azurite_server import connection_string

    return connection_string(store["port"])


def _azure_access(store: dict[str, Any]) -> Access:
    conn = {"conn_type": "wasb", "extra": {"connection_string": _azure_connection_string(store)}}
    return Access(
        f"abfs://{AZURE_CONN}@{store['container']}/{store['prefix']}",
        {"AIRFLOW_CONN_" + AZURE_CONN.upper(): json.dumps(conn)},
    )


class AzureRaw:
    """azure-storage-blob's own parallel transfers: ``upload_blob`` (blocks staged on 4
    connections) and ``download_blob(...).readinto`` (ranged GETs on 4 connections)."""

    how = "azure-storage-blob upload_blob / download_blob, max_concurrency=4"
    CONCURRENCY = 4

    def __init__(self, store: dict[str, Any]) -> None:
        from azure.storage.blob import BlobServiceClient

        self.service = BlobServiceClient.from_connection_string(_azure_connection_string(store))
        self.container = self.service.get_container_client(store["container"])
        self.prefix = store["prefix"]

    def put(self, key: str, data: bytes | memoryview) -> None:
        self.container.upload_blob(f"{self.prefix}/{key}", bytes(data), overwrite=True, max_concurrency=self.CONCURRENCY)

    def get(self, key: str, size: int) -> memoryview:
        buf = io.BytesIO()
        self.container.download_blob(f"{self.prefix}/{key}", max_concurrency=self.CONCURRENCY).readinto(buf)
        return buf.getbuffer()

    def usage(self, sub: str) -> tuple[int, int]:
        count = total = 0
        for blob in self.container.list_blobs(name_starts_with=f"{self.prefix}/{sub}/"):
            count += 1
            total += blob.size or 0
        return count, total

    def clear(self) -> None:
        for blob in self.container.list_blobs(name_starts_with=self.prefix + "/"):
            self.container.delete_blob(blob.name)

    def close(self) -> None:
        self.service.close()


# ------------------------------------------------------------------------------ specs


SPECS: dict[str, StoreSpec] = {
    spec.name: spec
    for spec in [
        StoreSpec("local", "temp directory", _local_access, LocalRaw),
        StoreSpec("s3", "SeaweedFS S3 on 127.0.0.1", _s3_access, S3Raw, start=_start_s3),
        StoreSpec("gcs", "fake-gcs-server on 127.0.0.1", _gcs_access, GCSRaw, start=_start_gcs,
                  common_io_na=_gcs_common_io_na),
        StoreSpec("azure", "Azurite on 127.0.0.1", _azure_access, AzureRaw, start=_start_azure,
                  common_io_na=lambda: "common.io reaches abfs:// through adlfs, which is not installed"),
        StoreSpec("redis", "redis-server on 127.0.0.1", _redis_access, RedisRaw, start=_start_redis,
                  common_io_na=lambda: "common.io has no Redis store"),
        StoreSpec("replicated", "s3 + gcs: every push to both, pulls from s3", _replicated_access, ReplicatedRaw,
                  members=("s3", "gcs"),
                  common_io_na=lambda: "common.io has no replicated store"),
    ]
}


def access(store: dict[str, Any]) -> Access:
    return SPECS[store["kind"]].access(store)


def raw_client(store: dict[str, Any]) -> RawClient:
    return SPECS[store["kind"]].raw(store)


def copies(store: dict[str, Any]) -> int:
    """How many copies of each object the store keeps."""
    return len(store.get("members") or ()) or 1


def for_case(store: dict[str, Any], tag: str, local_root: str) -> dict[str, Any]:
    """The store dict of one case process: a fresh root (local) or prefix under the run's."""
    store = dict(store)
    if store["kind"] == "local":
        store["root"] = local_root
    elif store.get("members"):
        store["members"] = [for_case(m, tag, local_root) for m in store["members"]]
    else:
        store["prefix"] = f"{store['prefix']}/{tag}".lstrip("/")
    return store


def servers_needed(selected: list[str]) -> list[str]:
    """The stores whose servers a run of ``selected`` starts, each once, in order."""
    out: list[str] = []
    for name in selected:
        for s in SPECS[name].members or (name,):
            if s not in out:
                out.append(s)
    return out


def compose(name: str, started: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The store dict of ``name`` once its servers (or its members') are up."""
    spec = SPECS[name]
    if spec.members:
        return {"kind": name, "members": [started[m] for m in spec.members]}
    return started[name]
