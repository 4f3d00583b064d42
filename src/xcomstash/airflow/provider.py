"""Provider metadata: lets Airflow discover xcomstash and document its ``[xcomstash]`` section."""

from __future__ import annotations

from typing import Any

from importlib.metadata import version as _dist_version

_OPTIONS: dict[str, dict[str, Any]] = {
    "store_url": {
        "description": (
            "Where offloaded XCom values are stored: file:///absolute/path or "
            "s3://[conn_id@]bucket/prefix (credentials and endpoint from that Airflow AWS "
            "connection, aws_default if none is named). Empty means "
            "file://$AIRFLOW_HOME/xcomstash.\n"
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "s3://aws_default@my-bucket/xcom",
        "default": "",
    },
    "threshold": {
        "description": (
            "Values whose encoded size is at least this many bytes are offloaded to the store; "
            "smaller ones stay inline in the xcom table exactly as BaseXCom stores them. "
            "Types BaseXCom cannot store (numpy arrays, bytes, Arrow, polars) are always "
            "offloaded.\n"
        ),
        "version_added": "0.1.0",
        "type": "integer",
        "example": "1048576",
        "default": "65536",
    },
    "compression": {
        "description": (
            "Compression of stored objects: zstd or none. Objects are compressed in 1 MiB "
            "frames, each only if a sample shows it pays (random floats are stored raw).\n"
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "none",
        "default": "zstd",
    },
    "compression_level": {
        "description": "zstd level, 1 (fastest) to 22 (smallest).\n",
        "version_added": "0.1.0",
        "type": "integer",
        "example": "3",
        "default": "1",
    },
    "exclusive": {
        "description": (
            "Offload every value, whatever its size, so the metadata database only ever holds "
            "references.\n"
        ),
        "version_added": "0.1.0",
        "type": "boolean",
        "example": "True",
        "default": "False",
    },
    "cache_dir": {
        "description": (
            "Local read cache for remote stores (S3): objects are kept here by digest, so "
            "several tasks on one worker fetch a value once. Empty means "
            "$TMPDIR/xcomstash-cache; 'off' disables it. Local stores are never cached.\n"
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "/var/cache/xcomstash",
        "default": "",
    },
    "cache_max_bytes": {
        "description": "Size bound of the read cache; least recently used objects go first.\n",
        "version_added": "0.1.0",
        "type": "integer",
        "example": "10737418240",
        "default": "2147483648",
    },
    "read_ahead": {
        "description": (
            "When a task reads a mapped task's outputs one by one (Airflow's lazy sequence), "
            "fetch the next ones in the background.\n"
        ),
        "version_added": "0.1.0",
        "type": "boolean",
        "example": "False",
        "default": "True",
    },
    "dedup": {
        "description": (
            "Store identical payloads pushed in one DAG run once: objects are named by their "
            "digest under <dag>/<run>/.blobs/, with one small link per XCom under "
            "<dag>/<run>/.links/ saying which XComs use a blob (purge deletes a blob with its "
            "last link). False writes one object per XCom at <dag>/<run>/<task>/<map>/<key>.xcs.\n"
        ),
        "version_added": "0.1.0",
        "type": "boolean",
        "example": "False",
        "default": "True",
    },
    "reconcile_grace_period": {
        "description": (
            "xcomstash reconcile only deletes unreferenced objects last written longer ago than "
            "this (s, m, h, d suffixes), so an object whose task has not recorded its xcom row "
            "yet is never collected. Keep it well above your longest task runtime plus retries.\n"
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "24h",
        "default": "6h",
    },
    "retention_policies": {
        "description": (
            "JSON list of retention policies applied by `xcomstash retention`; the first whose "
            "dag_id glob matches a DAG applies: max_age (e.g. 30d), keep_last_runs (N), "
            "max_bytes (stored bytes per DAG, e.g. 50GiB). Empty: no retention.\n"
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": '[{"dag_id": "etl_*", "max_age": "30d", "keep_last_runs": 10, "max_bytes": "50GiB"}]',
        "default": "",
    },
    "trace_file": {
        "description": (
            "If set, append one JSON line per offloaded push, pull and purge (where, size, time) "
            "to this file on the worker. Useful for debugging and benchmarks.\n"
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "/tmp/xcomstash-trace.jsonl",
        "default": "",
    },
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "xcomstash",
        "name": "xcomstash",
        "description": (
            "The XCom data plane for Airflow 3: large values in object storage, small readable "
            "references in the database.\n"
        ),
        "versions": [_dist_version("xcomstash")],
        "config": {
            "xcomstash": {
                "description": "xcomstash XCom backend.",
                "options": _OPTIONS,
            }
        },
    }
