"""Provider metadata: lets Airflow discover xcomstash and document its ``[xcomstash]`` section."""

from __future__ import annotations

from typing import Any

from importlib.metadata import version as _dist_version

_OPTIONS: dict[str, dict[str, Any]] = {
    "store_url": {
        "description": (
            "Where offloaded XCom values are stored: file:///absolute/path, "
            "s3://[conn_id@]bucket/prefix, gs://[conn_id@]bucket/prefix, "
            "abfs://[conn_id@]container/prefix or redis://[conn_id@]/prefix (credentials and "
            "endpoint from that Airflow connection, or the provider's default one: aws_default, "
            "google_cloud_default, wasb_default, redis_default). Empty means "
            "file://$AIRFLOW_HOME/xcomstash. Several URLs separated by spaces: every value is "
            "written to each location and read from the first that serves it intact.\n"
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "s3://aws_default@my-bucket/xcom",
        "default": "",
    },
    "previous_store_urls": {
        "description": (
            "Stores values were written to before store_url moved (a new bucket or prefix), "
            "separated by spaces: references into them stay readable, nothing new is written "
            "there, and 'xcomstash move' copies their objects into store_url and rewrites the "
            "references.\n"
        ),
        "version_added": "0.2.0",
        "type": "string",
        "example": "s3://aws_default@old-bucket/xcom",
        "default": "",
    },
    "write_quorum": {
        "description": (
            "With several locations in store_url: how many must hold a value for its push to "
            "succeed (0: all of them). Below it the push fails and no location keeps a copy.\n"
        ),
        "version_added": "0.2.0",
        "type": "integer",
        "example": "1",
        "default": "0",
    },
    "read_order": {
        "description": (
            "With several locations in store_url: the order reads try them in, as indexes into "
            "store_url counted from 0 (empty: as listed). A read moves to the next location when "
            "one is unreachable, lacks the object or serves damaged bytes.\n"
        ),
        "version_added": "0.2.0",
        "type": "string",
        "example": "1 0",
        "default": "",
    },
    "push_timeout": {
        "description": (
            "Overall bound in seconds on one push of a stored value (every request, retry and "
            "replica included); past it the task fails with StoreTimeoutError instead of waiting "
            "on a hung store. 0: no bound (the store clients' own timeouts only).\n"
        ),
        "version_added": "0.2.0",
        "type": "float",
        "example": "120",
        "default": "600",
    },
    "pull_timeout": {
        "description": (
            "Overall bound in seconds on one pull of a stored value (every request and failover "
            "to another location included). 0: no bound.\n"
        ),
        "version_added": "0.2.0",
        "type": "float",
        "example": "120",
        "default": "600",
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
            "Compression of stored objects: auto, zstd or none. Objects are compressed in 1 MiB "
            "frames, each only if a sample shows it pays (random floats are stored raw). auto "
            "compresses with zstd on remote stores (S3, GCS, Azure, Redis), where fewer bytes "
            "travel faster, and not on a local directory store, which writes faster than zstd "
            "compresses; set zstd to save disk space there.\n"
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "zstd",
        "default": "auto",
    },
    "compression_level": {
        "description": "zstd level, 1 (fastest) to 22 (smallest).\n",
        "version_added": "0.1.0",
        "type": "integer",
        "example": "3",
        "default": "1",
    },
    "hash": {
        "description": (
            "The hash every stored frame and object is checked with, on the push and again on "
            "the pull: blake3 (default: as strong as SHA-256 and two to three times faster per "
            "core) or sha256 (where only FIPS-approved algorithms may be used). Objects written "
            "with either are always read; the reference names the hash of its object.\n"
        ),
        "version_added": "0.2.0",
        "type": "string",
        "example": "sha256",
        "default": "blake3",
    },
    "exclusive": {
        "description": (
            "Offload every value, whatever its size, so the metadata database only ever holds "
            "references; a plain value found in a row is refused (PlainRowError). One exception: "
            "operator extra links (keys starting with _link_) stay plain rows, since Airflow's API "
            "server builds the links from the rows, if they are a JSON string (a URL) or a plain "
            "JSON value of at most 4096 bytes; anything else under such a key is refused "
            "(ExtraLinkValueError).\n"
        ),
        "version_added": "0.1.0",
        "type": "boolean",
        "example": "True",
        "default": "False",
    },
    "accept_plain_rows": {
        "description": (
            "With exclusive: still read plain values in rows written before exclusive was switched "
            "on, until 'xcomstash migrate' has turned them into references.\n"
        ),
        "version_added": "0.2.0",
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
    "redis_chunk_size": {
        "description": (
            "Redis stores (redis://[conn_id@]/prefix): values larger than this many bytes are "
            "split over several keys of this size, written while the value is still being "
            "encoded; a push holds about four chunks in memory.\n"
        ),
        "version_added": "0.2.0",
        "type": "integer",
        "example": "1048576",
        "default": "4194304",
    },
    "redis_ttl": {
        "description": (
            "Redis stores: seconds after which a stored value expires (its manifest and chunks "
            "together); a reference to an expired value then reads as missing. 0: never.\n"
        ),
        "version_added": "0.2.0",
        "type": "integer",
        "example": "604800",
        "default": "0",
    },
    "gcs_chunk_size": {
        "description": (
            "GCS stores: values larger than this many bytes go up as a resumable upload in "
            "chunks of this size (a multiple of 262144), sent while the value is still being "
            "encoded; a push holds about three chunks in memory. Larger chunks are faster.\n"
        ),
        "version_added": "0.2.0",
        "type": "integer",
        "example": "16777216",
        "default": "67108864",
    },
    "gcs_retry_timeout": {
        "description": (
            "GCS stores: seconds google-cloud-storage keeps retrying a request that failed "
            "transiently (429, 5xx, dropped connections) before the push or pull fails with a "
            "store error. Lower it where a replicated store should give up on a GCS location "
            "that is down sooner.\n"
        ),
        "version_added": "0.2.0",
        "type": "float",
        "example": "5",
        "default": "30",
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
    "preview_rows": {
        "description": "First rows of a table the XCom tab of the Airflow UI shows.\n",
        "version_added": "0.1.0",
        "type": "integer",
        "example": "50",
        "default": "20",
    },
    "preview_max_whole_bytes": {
        "description": (
            "The XCom tab reads a table's first rows in part whatever its size; other values "
            "(JSON, arrays, polars) are read whole for their preview only up to this many bytes.\n"
        ),
        "version_added": "0.1.0",
        "type": "integer",
        "example": "8388608",
        "default": "33554432",
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
    "metrics": {
        "description": (
            "Send xcomstash metrics (push and pull latency, bytes pushed, stored and pulled, "
            "compression ratio, inline and offloaded counts, cache hits and misses, encryption "
            "time, integrity failures, denied reads, failovers, errors by type) through Airflow's "
            "own Stats, named xcomstash.* and tagged dag_id and task_id of the XCom: they go "
            "wherever [metrics] sends Airflow's (statsd, Datadog, OpenTelemetry) and follow its "
            "prefix, allow and block lists. Only takes effect when Airflow metrics are on "
            "(statsd_on, statsd_datadog_enabled or otel_on); False keeps xcomstash's out.\n"
        ),
        "version_added": "0.2.0",
        "type": "boolean",
        "example": "False",
        "default": "True",
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
    "keysets": {
        "description": (
            "Encryption and signing keysets: file:/path/keyset.json, env:VAR or variable:NAME "
            "(an Airflow Variable, so any configured secrets backend). Scope keysets per DAG id "
            "pattern with pattern=source entries separated by ';' (first match wins), e.g. "
            "team_a_*=file:/k/a.json; team_b_*=variable:xcs_team_b. Create a file with "
            "'xcomstash keys generate FILE' (mode 0600; a file others may read is refused). Each "
            "keyset is loaded when a DAG it covers is first used. Empty: with a local directory "
            "store, a keyset is created on first use at $AIRFLOW_HOME/xcomstash-keyset.json and "
            "references are signed (not encrypted); with a shared store (S3, ...) set keysets, "
            "or opt out of signing with sign_references = false.\n"
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "file:/etc/xcomstash/keyset.json",
        "default": "",
    },
    "encrypt": {
        "description": (
            "Encrypt offloaded values (AES-256-GCM, streamed frame by frame, per-object data key "
            "wrapped under the keyset's primary key). auto: when keysets is set (not for the "
            "keyset created for a local store). Needs signed references. true: a DAG no "
            "keyset covers fails its pushes instead of storing plaintext. false: never.\n"
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "true",
        "default": "auto",
    },
    "encryption_scope": {
        "description": (
            "What an encrypted object is bound to (as associated data): dag (an object or "
            "reference copied into another DAG does not decrypt) or run (nor into another run).\n"
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "run",
        "default": "dag",
    },
    "sign_references": {
        "description": (
            "Sign references (HMAC-SHA256 under a key derived from the keyset) and reject, before "
            "any store access, references that are unsigned, forged or edited in the database. "
            "auto: on (with keysets, or the keyset created for a local store). false: opt out; "
            "anyone who may write XComs can then redirect or unrestrict a reference.\n"
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "true",
        "default": "auto",
    },
    "compress_encrypted": {
        "description": (
            "Comma-separated DAG id patterns whose encrypted values are still compressed. By "
            "default encrypted values are stored uncompressed (and padded to size buckets): "
            "compressing a secret next to data an attacker chose leaks it through the size.\n"
        ),
        "version_added": "0.2.0",
        "type": "string",
        "example": "reports_*",
        "default": "",
    },
    "accept_plaintext_objects": {
        "description": (
            "While switching encryption on: still read values stored in plaintext before. "
            "Otherwise, with encryption on, a plaintext object behind a reference is refused.\n"
        ),
        "version_added": "0.2.0",
        "type": "boolean",
        "example": "True",
        "default": "False",
    },
    "accept_unsigned_references": {
        "description": (
            "While switching signing on: the time it was switched on (ISO 8601). Until then-written "
            "rows are migrated, references without a MAC are still read if they name no XCom and "
            "no readers and their (plaintext) object is older than this time; common.io rows too. "
            "Not with encrypt. false: every reference must be signed.\n"
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "2026-12-01T00:00:00Z",
        "default": "False",
    },
    "read_scope": {
        "description": (
            "Who may read a value by default: any, or dag (only tasks of the producing DAG). A "
            "producer can restrict a value further: return xcomstash.Restricted(value, "
            "tasks=[...]).\n"
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "dag",
        "default": "any",
    },
    "allowed_types": {
        "description": (
            "Comma-separated allowlist of value types for every DAG: short type names "
            "(pandas.DataFrame, dict), codec names (numpy.npy) or json (anything stored as "
            "JSON). Empty: any type.\n"
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "json",
        "default": "",
    },
    "max_value_bytes": {
        "description": (
            "Largest value (encoded bytes) a task may push; larger ones fail the task naming the "
            "rule. 0: no limit.\n"
        ),
        "version_added": "0.1.0",
        "type": "integer",
        "example": "104857600",
        "default": "0",
    },
    "sensitive_data": {
        "description": (
            "Scan values for secrets and personal data (Airflow's masked secrets, sensitive key "
            "names, cloud keys, private keys, tokens, emails, card numbers): off, warn, mask "
            "(redact with *** before storing) or reject (fail the task). Tables are sampled "
            "(string columns, 1,000 rows each); see the security documentation.\n"
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "reject",
        "default": "off",
    },
    "dag_policies": {
        "description": (
            "Per DAG id pattern overrides of allowed_types, max_value_bytes, sensitive_data and "
            "read_scope, as a JSON list: [{\"dags\": \"finance_*\", \"allowed_types\": "
            "[\"json\"], \"sensitive_data\": \"reject\"}] (first matching entry wins).\n"
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "[{\"dags\": \"finance_*\", \"allowed_types\": [\"json\"]}]",
        "default": "",
    },
    "audit": {
        "description": (
            "Audit sinks for pushes, pulls, purges, denials and failures: log (the task log), "
            "store (durable JSON-lines objects under !audit/ in the store, queried with "
            "'xcomstash audit'), both (log,store), or off. auto: log, plus store when keysets "
            "is set.\n"
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "log,store",
        "default": "auto",
    },
    "audit_inline": {
        "description": (
            "Also audit successful pushes and pulls of values kept inline in the database.\n"
        ),
        "version_added": "0.1.0",
        "type": "boolean",
        "example": "True",
        "default": "False",
    },
    "allow_http_endpoints": {
        "description": (
            "Allow plain-HTTP object store endpoints, and then only on loopback (a local test "
            "server). By default endpoints must use TLS.\n"
        ),
        "version_added": "0.1.0",
        "type": "boolean",
        "example": "True",
        "default": "False",
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
