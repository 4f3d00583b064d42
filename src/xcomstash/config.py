"""Engine configuration: one frozen dataclass, validated on construction.

In Airflow the values come from the ``[xcomstash]`` section (``AIRFLOW__XCOMSTASH__*``); the
engine itself only sees this object.
"""

from __future__ import annotations

from dataclasses import dataclass

from xcomstash.format import compression, digests
from xcomstash.errors import ConfigError
from xcomstash.stores import store_urls

DEFAULT_STORE_URL = "file:///tmp/xcomstash"
DEFAULT_THRESHOLD = 64 * 1024


@dataclass(frozen=True)
class StashConfig:
    #: Where offloaded values go: ``file:///path`` or ``s3://[conn_id@]bucket/prefix``; several
    #: URLs separated by whitespace replicate every value to each of them.
    store_url: str = DEFAULT_STORE_URL
    #: With several locations: how many must hold a value for its push to succeed (``None``: all).
    write_quorum: int | None = None
    #: With several locations: the order reads try them in, as indexes into ``store_url``
    #: (``None``: as listed). E.g. ``(1, 0)`` reads the second location first (the nearer one).
    read_order: tuple[int, ...] | None = None
    #: Per-DAG stores: ``(DAG id pattern, store URL or None)`` in order, the first match
    #: deciding (``None``: ``store_url``). See :mod:`xcomstash.stores.routed`.
    dag_stores: tuple[tuple[str, str | None], ...] = ()
    #: Stores values were written to before ``store_url`` moved (a new bucket or prefix):
    #: references into them stay readable (never written to) until ``xcomstash move`` has
    #: copied their objects into the current store and rewritten the references.
    previous_store_urls: tuple[str, ...] = ()
    #: Values whose encoded size is at least this many bytes are offloaded.
    threshold: int = DEFAULT_THRESHOLD
    #: Compression of stored object bodies: ``zstd``, ``none`` or ``auto`` (zstd on remote
    #: stores, none on a local one: :func:`xcomstash.format.compression.resolve`).
    compression: str = "auto"
    compression_level: int = 1
    #: What new objects' frames and root digest are hashed with: ``blake3`` or ``sha256``
    #: (:mod:`xcomstash.format.digests`). Objects of either kind are always read.
    hash: str = digests.DEFAULT
    #: Offload every value; the database only ever holds references, and a plain value
    #: found in a row is refused (:class:`~xcomstash.errors.PlainRowError`). Operator extra
    #: links excepted: see :mod:`xcomstash.pipeline.links`.
    exclusive: bool = False
    #: With ``exclusive``: still read plain rows written before it was switched on (until
    #: ``xcomstash migrate`` has turned them into references).
    accept_plain_rows: bool = False
    #: Local read cache for remote stores (``None``: no cache), bounded to ``cache_max_bytes``.
    cache_dir: str | None = None
    cache_max_bytes: int = 2 * 1024**3
    #: Overall bounds, in seconds, on one push and one pull of a stored value (every request,
    #: retry and failover included); ``None``: none. See :mod:`xcomstash.pipeline.deadline`.
    push_timeout: float | None = 600.0
    pull_timeout: float | None = 600.0
    #: Fetch the next mapped outputs while a task reads them one by one.
    read_ahead: bool = True
    #: Store identical payloads of one DAG run once (content-addressed blobs plus links);
    #: ``False`` writes one object per XCom at a deterministic key instead.
    dedup: bool = True

    def __post_init__(self) -> None:
        locations = len(store_urls(self.store_url))
        if self.write_quorum is not None and not 1 <= self.write_quorum <= locations:
            raise ConfigError(f"write_quorum must be 1..{locations} (the locations in store_url), got {self.write_quorum!r}")
        for _, url in self.dag_stores:
            if url is not None:
                store_urls(url)
        for url in self.previous_store_urls:
            store_urls(url)
        if self.read_order is not None and sorted(self.read_order) != list(range(locations)):
            raise ConfigError(
                f"read_order must list each location of store_url once (0..{locations - 1}), got {list(self.read_order)}"
            )
        compression.validate(self.compression)
        digests.validate(self.hash)
        if not isinstance(self.threshold, int) or self.threshold < 0:
            raise ConfigError(f"threshold must be a non-negative integer, got {self.threshold!r}")
        for name in ("push_timeout", "pull_timeout"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ConfigError(f"{name} must be a positive number of seconds (or None), got {value!r}")
        if self.cache_max_bytes < 0:
            raise ConfigError(f"cache_max_bytes must be >= 0, got {self.cache_max_bytes!r}")
        if not 1 <= self.compression_level <= 22:
            raise ConfigError(f"compression_level must be 1..22, got {self.compression_level!r}")
