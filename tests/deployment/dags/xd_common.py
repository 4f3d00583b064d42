"""Values and digests shared by the deployment DAGs and the out-of-band verifier.

Producers build their value from (seed, what, index), return it, and record its digest twice:
a log line ``XD-DIGEST <dag>/<run>/<task>/<map_index> <key> <digest>`` and an inline XCom
``digest_<key>``. Consumers pull value and digest and fail with ``XD-WRONG-VALUE`` unless they
match; the test process later checks every stored value once more against the same digests.
Importable without Airflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

# pandas is imported only where a frame is built or checked: it costs a second or more of
# start-up in every task process that parses these DAG files, and most tasks never use it.

LOG_DIGEST = "XD-DIGEST"
LOG_VERIFIED = "XD-VERIFIED"
LOG_WRONG = "XD-WRONG-VALUE"


# ---------------------------------------------------------------------------- digests


def digest(value: Any) -> str:
    """A digest of everything that must survive the round trip: bytes, dtypes, shape, order,
    index and column labels; for plain values their type and canonical JSON."""
    h = hashlib.sha256()
    if type(value).__module__.startswith("pandas") and type(value).__name__ == "DataFrame":
        h.update(b"frame")
        h.update(repr([(str(c), str(t)) for c, t in value.dtypes.items()]).encode())
        h.update(repr((value.index.name, str(value.index.dtype), value.shape)).encode())
        h.update(np.ascontiguousarray(value.index.to_numpy()).tobytes() if value.index.dtype != object else b"")
        for name in value.columns:
            col = value[name]
            if col.dtype.kind in "mM":  # incl. tz-aware, whose to_numpy() is objects
                h.update(str(col.dtype).encode() + np.ascontiguousarray(col.array.asi8).tobytes())
            elif col.dtype.kind in "biufc":
                h.update(np.ascontiguousarray(col.to_numpy()).tobytes())
            else:
                h.update("\x1f".join("\x00" if v is None else str(v) for v in col.tolist()).encode())
    elif isinstance(value, np.ndarray):
        h.update(b"array")
        h.update(repr((value.dtype.str, value.shape, bool(value.flags.f_contiguous))).encode())
        h.update(value.tobytes(order="A"))
    else:
        h.update(type(value).__name__.encode())
        h.update(json.dumps(value, sort_keys=True, default=repr).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------- values


def rng(seed: int, *salt: Any) -> np.random.Generator:
    mixed = int.from_bytes(hashlib.sha256(repr((seed, salt)).encode()).digest()[:8], "little")
    return np.random.default_rng(mixed)


def frame(seed: int, rows: int) -> Any:
    """Mixed dtypes (incl. tz-aware timestamps and a categorical) on a named index."""
    import pandas as pd

    r = rng(seed, "frame")
    return pd.DataFrame(
        {
            "f64": r.standard_normal(rows),
            "i64": r.integers(-(2**40), 2**40, rows),
            "f32": r.standard_normal(rows).astype(np.float32),
            "flag": r.random(rows) < 0.3,
            "when": pd.date_range("2026-01-01", periods=rows, freq="s", tz="UTC"),
            "region": pd.Categorical(r.choice(["emea", "amer", "apac"], rows)),
        },
        index=pd.RangeIndex(rows, name="row"),
    )


def array(seed: int, rows: int, cols: int = 4, *salt: Any) -> np.ndarray:
    """Fortran-ordered float64: layout and dtype have to survive as well as the bytes."""
    return np.asfortranarray(rng(seed, "array", *salt).standard_normal((rows, cols)))


def noise(seed: int, nbytes: int, *salt: Any) -> np.ndarray:
    """Incompressible bytes as a uint8 array (what is stored is as large as the value)."""
    return np.frombuffer(rng(seed, "noise", *salt).bytes(nbytes), dtype=np.uint8).copy()


def shard(seed: int, i: int) -> Any:
    """Mapped outputs: even indexes are arrays (offloaded), odd ones small dicts (inline)."""
    if i % 2 == 0:
        return array(seed, 5_000 + 37 * i, 4, "shard", i)
    return {"shard": i, "seed": seed, "label": f"part-{i:03d}"}


def small(seed: int) -> dict[str, Any]:
    return {"seed": seed, "ratio": 0.1 + 0.2, "tags": ["a", "ü", "z"], "nested": {"n": seed % 97}}


# ---------------------------------------------------------------------------- task helpers


def record(ti: Any, key: str, value: Any) -> str:
    """Log and push the digest of a value this task returns or pushes under ``key``."""
    d = digest(value)
    where = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index if ti.map_index is not None else -1}"
    print(f"{LOG_DIGEST} {where} {key} {d} on {worker()}", flush=True)
    ti.xcom_push(key=f"digest_{key}", value=d)
    return d


def verify(label: str, value: Any, expected: str | None) -> str:
    """Raise unless ``value`` has the producer's digest: the consumer-side check."""
    got = digest(value)
    if expected is None or got != expected:
        print(f"{LOG_WRONG} {label}: got {got} ({type(value).__name__}), expected {expected}", flush=True)
        raise AssertionError(f"{LOG_WRONG} {label}")
    print(f"{LOG_VERIFIED} {label} {got} on {worker()}", flush=True)
    return got


def as_list(pulled: Any) -> list[Any]:
    """``xcom_pull`` over a mapped task returns a list, except with one map index, where it
    returns the value itself."""
    if pulled is None:
        return []
    if isinstance(pulled, (str, dict)) or not hasattr(pulled, "__iter__"):
        return [pulled]
    return list(pulled)


def worker() -> str:
    """Which (simulated) machine runs this task: the Celery worker's name, else ``local``."""
    return os.environ.get("XD_WORKER", "local")


def shared_dir() -> Path:
    """A directory the test process and the tasks both see (gates, pid files)."""
    return Path(os.environ["XD_SHARED"])


def wait_for_gate(name: str, timeout: float = 300) -> None:
    """Block until the test opens the gate (creates the file): lets a test change the world
    (stop the store, slow it down) while tasks are running but before they push."""
    gate = shared_dir() / f"gate-{name}"
    ready = shared_dir() / f"ready-{name}-{os.getpid()}"
    ready.write_text(str(os.getpid()))
    deadline = time.monotonic() + timeout
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        time.sleep(0.2)
