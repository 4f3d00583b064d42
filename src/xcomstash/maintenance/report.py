"""Small accumulators shared by the maintenance reports: counts, bytes, oldest, by DAG."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

#: Example keys kept per category in a report (the counts are always complete).
SAMPLE_SIZE = 20


@dataclass
class Tally:
    """How many objects, how many bytes, the oldest modification time, and the same by DAG."""

    count: int = 0
    bytes: int = 0
    oldest: float | None = None
    by_dag: dict[str, list[int]] = field(default_factory=dict)
    sample: list[str] = field(default_factory=list)

    def add(self, key: str, size: int, modified: float | None, dag: str) -> None:
        self.count += 1
        self.bytes += size
        if modified is not None and (self.oldest is None or modified < self.oldest):
            self.oldest = modified
        entry = self.by_dag.get(dag)
        if entry is None:
            self.by_dag[dag] = [1, size]
        else:
            entry[0] += 1
            entry[1] += size
        if len(self.sample) < SAMPLE_SIZE:
            self.sample.append(key)

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "bytes": self.bytes,
            "oldest": iso(self.oldest),
            "by_dag": {
                dag: {"count": c, "bytes": b}
                for dag, (c, b) in sorted(self.by_dag.items(), key=lambda kv: -kv[1][1])
            },
            "sample": list(self.sample),
        }


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``6h``, ``30d``, ``2w`` -> seconds."""
    from xcomstash.errors import ConfigError

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    raw = str(text).strip().lower()
    try:
        if raw and raw[-1] in units:
            value = float(raw[:-1]) * units[raw[-1]]
        else:
            value = float(raw)
    except ValueError:
        raise ConfigError(f"not a duration: {text!r} (use e.g. 90s, 15m, 6h, 30d)") from None
    if value < 0:
        raise ConfigError(f"duration must not be negative: {text!r}")
    return value


def parse_size(text: str) -> int:
    """``1000``, ``10MB``, ``5GiB``, ``1.5T`` -> bytes (K/M/G/T are powers of 1024)."""
    from xcomstash.errors import ConfigError

    raw = str(text).strip().lower().replace(" ", "")
    for suffix in ("ib", "b"):
        if raw.endswith(suffix) and raw[: -len(suffix)][-1:] in "kmgt":
            raw = raw[: -len(suffix)]
            break
    factor = 1
    if raw and raw[-1] in "kmgt":
        factor = 1024 ** ("kmgt".index(raw[-1]) + 1)
        raw = raw[:-1]
    elif raw.endswith("b"):
        raw = raw[:-1]
    try:
        value = int(float(raw) * factor)
    except ValueError:
        raise ConfigError(f"not a size: {text!r} (use e.g. 500MiB, 20GiB)") from None
    if value < 0:
        raise ConfigError(f"size must not be negative: {text!r}")
    return value
