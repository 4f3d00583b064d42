"""Deterministic values and digests shared by the test DAGs and the tests themselves.

Producers and consumers both rebuild the expected value from here (and producers also push a
digest of what they returned), so a consumer that receives anything other than the exact value
fails its task, and with it the run. Importable without Airflow (the tests use it in-process).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

SEED = 20261123

#: Comfortably above the default 64 KiB threshold once encoded.
BIG_ROWS = 60_000
MAPPED_COUNT = 6


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------- frames and arrays


def big_frame(rows: int = BIG_ROWS, seed: int = SEED) -> pd.DataFrame:
    """Mixed dtypes, a named tz-aware index, a categorical, strings with non-ASCII and NaN."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "f64": rng.standard_normal(rows),
            "f32": rng.standard_normal(rows).astype(np.float32),
            "i64": rng.integers(-(2**40), 2**40, rows),
            "flag": rng.random(rows) < 0.3,
            "region": pd.Categorical(rng.choice(["emea", "amer", "apac"], rows)),
            "label": [f"ü-{i % 97}" if i % 11 else None for i in range(rows)],
        }
    )
    df.loc[df.index % 13 == 0, "f64"] = np.nan
    df.index = pd.date_range("2026-01-01", periods=rows, freq="s", tz="UTC", name="ts")
    return df


def small_frame() -> pd.DataFrame:
    return pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})


def frame_digest(df: pd.DataFrame) -> str:
    """Content, dtypes and index metadata (hash_pandas_object alone ignores dtypes)."""
    h = hashlib.sha256()
    h.update(repr([(str(c), str(t)) for c, t in df.dtypes.items()]).encode())
    h.update(repr((df.index.name, str(df.index.dtype), len(df))).encode())
    h.update(pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes())
    return h.hexdigest()


def big_array(seed: int = SEED) -> np.ndarray:
    """Fortran-ordered float32, so layout and dtype have to survive too."""
    rng = np.random.default_rng(seed)
    return np.asfortranarray(rng.standard_normal((400, 150)).astype(np.float32))


def array_digest(a: np.ndarray) -> str:
    header = repr((a.dtype.str, a.shape, bool(a.flags.f_contiguous)))
    return sha256(header.encode() + a.tobytes(order="A"))


def big_bytes(size: int = 200_000, seed: int = SEED) -> bytes:
    return np.random.default_rng(seed).bytes(size)


def scalar() -> np.float64:
    return np.float64(0.1) + np.float64(0.2)  # 0.30000000000000004: exact bits matter


def small_dict() -> dict[str, Any]:
    return {"name": "xcomstash", "count": 3, "ratio": 0.25, "tags": ["a", "b"], "nested": {"k": None}}


def big_json() -> list[dict[str, Any]]:
    return [{"i": i, "name": f"row-{i}", "even": i % 2 == 0} for i in range(4_000)]


def big_dict() -> dict[str, Any]:
    """A plain dict well above the 64 KiB threshold: nested lists, floats, None, non-ASCII."""
    return {f"key-{i:05d}": {"n": i, "x": i / 7, "tags": ["ü", str(i)], "none": None} for i in range(3_000)}


def json_digest(value: Any) -> str:
    """A JSON value's digest, independent of key order."""
    import json

    return sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode())


# ----------------------------------------------------------------------------------- mapping


def mapped_value(i: int) -> Any:
    """Even map indexes return a large array (stored), odd ones a small dict (inline)."""
    if i % 2 == 0:
        rng = np.random.default_rng(SEED + i)
        return rng.standard_normal(20_000) + i
    return {"i": i, "square": i * i}


def assert_mapped_value(i: int, value: Any) -> None:
    expected = mapped_value(i)
    if isinstance(expected, np.ndarray):
        assert isinstance(value, np.ndarray), (i, type(value))
        assert array_digest(value) == array_digest(expected), f"map index {i}: array differs"
    else:
        assert value == expected, (i, value, expected)


# ------------------------------------------------------------------------- retries and clears


def attempt_array(phase: str, try_number: int) -> np.ndarray:
    """A value that differs per run phase and try, so a stale object cannot pass for a new one."""
    rng = np.random.default_rng(SEED + 1000 * int(phase) + try_number)
    return rng.standard_normal(30_000)


# ------------------------------------------------------------------------------------ faults

FAULT_KEYS = ("intact", "deleted", "truncated", "flipped", "unreachable")


def fault_payload(key: str) -> np.ndarray:
    """Random floats: incompressible, so the stored object's body is the value's bytes."""
    return np.random.default_rng(SEED + FAULT_KEYS.index(key)).standard_normal(50_000)


# ------------------------------------------------------------------------------ compatibility


def legacy_values() -> dict[str, Any]:
    """What the compatibility source DAG pushes under each key (BaseXCom/common.io-compatible)."""
    return {
        "number": 7,
        "text": "a string long enough for the common.io threshold",
        "record": {"id": 42, "ok": True, "scores": [1.5, 2.5], "note": "ß"},
        "rows": [[1, "a"], [2, "b"], [3, "c"]],
        "frame": small_frame(),
        "doomed": {"this object": "is deleted before it is read"},
    }


def legacy_mapped(i: int) -> dict[str, Any]:
    return {"mapped": i, "payload": "x" * (10 + i)}


def same(a: Any, b: Any) -> bool:
    if isinstance(a, pd.DataFrame) or isinstance(b, pd.DataFrame):
        return isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame) and a.equals(b)
    return type(a) is type(b) and a == b
