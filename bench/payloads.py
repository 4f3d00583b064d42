"""Seeded, deterministic payloads and the strict equality check used on every pulled value.

Every payload is a pure function of its parameters, so the case runner can drop the pushed value
before pulling (as a real downstream task would not hold it) and rebuild it afterwards to check
what came back.

DataFrame shape: N rows, 8 float64 columns + 1 string column (pandas' default ``str`` dtype).
The float columns are a mix, so compression is neither hopeless nor trivially easy:
4 columns of standard-normal noise (incompressible), 2 price-like columns rounded to cents, and
2 integer-valued count columns; the string column holds ``cat-NNNNN`` labels drawn from 50,000
values. One row is about 79 bytes in memory (64 float bytes + 11 string bytes + a 4-byte
offset), so 4,000,000 rows are about 300 MiB.
"""

from __future__ import annotations

from typing import Any

MIB = 1024 * 1024
#: In-memory bytes per DataFrame row (8 x 8 float bytes, 11 string bytes, 4-byte offset).
ROW_BYTES = 79
SEED = 20261123


def rows_for_mib(mib: float) -> int:
    """Rows giving about ``mib`` MiB in memory, rounded to 1,000 (300 MiB -> 3,982,000)."""
    return max(1000, int(round(mib * MIB / ROW_BYTES / 1000.0)) * 1000)


def make_frame(rows: int, seed: int = SEED):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {}
    noise = rng.standard_normal((4, rows))
    for i in range(4):
        cols[f"x{i}"] = noise[i]
    del noise
    cols["price"] = np.round(rng.gamma(2.0, 50.0, rows), 2)
    cols["cost"] = np.round(rng.gamma(2.0, 20.0, rows), 2)
    cols["count"] = rng.poisson(20, rows).astype("float64")
    cols["units"] = rng.integers(0, 1000, rows).astype("float64")
    picks = rng.integers(0, len(_labels()), rows)
    cols["category"] = pd.array(_labels().take(pa_array(picks)), dtype="str")
    return pd.DataFrame(cols)


_LABELS: list[Any] = []


def _labels():
    """The 50,000 ``cat-NNNNN`` labels as an Arrow array (built once per process)."""
    if not _LABELS:
        import pyarrow as pa

        _LABELS.append(pa.array([f"cat-{i:05d}" for i in range(50_000)]))
    return _LABELS[0]


def pa_array(values: Any):
    import pyarrow as pa

    return pa.array(values)


def make_array(mib: float, seed: int = SEED):
    """A C-ordered 2-D float64 array of about ``mib`` MiB (1,024 columns)."""
    import numpy as np

    n = max(1, int(mib * MIB) // 8)
    cols = 1024
    rows = max(1, n // cols)
    return np.random.default_rng(seed).standard_normal((rows, cols))


def make_small(i: int) -> dict[str, Any]:
    """The i-th small JSON value: a dict of about 100 bytes as JSON."""
    import random

    rng = random.Random(SEED * 1_000_003 + i)
    return {
        "id": i,
        "name": f"record-{i:06d}",
        "score": round(rng.random() * 100, 4),
        "ok": rng.random() < 0.5,
        "tags": [rng.choice(["a", "b", "c", "d"]) for _ in range(3)],
        "region": rng.choice(["eu-west", "us-east", "ap-south"]),
    }


def fanin_rows(item_mib: float) -> int:
    return rows_for_mib(item_mib)


def rows_for_kib(kib: float) -> int:
    """Rows giving about ``kib`` KiB in memory, rounded to 100 rows (100 KiB -> 1,300 rows):
    :func:`rows_for_mib` rounds to 1,000 rows, too coarse below 1 MiB."""
    return max(100, int(round(kib * 1024 / ROW_BYTES / 100.0)) * 100)


def make_fanin_item(map_index: int, item_mib: float, rows: int | None = None):
    """The item of ``map_index``: ``rows`` rows when given (the fan-in sweep's small items),
    else about ``item_mib`` MiB."""
    return make_frame(rows or fanin_rows(item_mib), seed=SEED + 1 + map_index)


def nbytes(value: Any) -> int:
    """In-memory size of a payload (deep for DataFrames)."""
    if _is(value, "pandas"):
        return int(value.memory_usage(index=True, deep=True).sum())
    if _is(value, "numpy"):
        return int(value.nbytes)
    import json

    return len(json.dumps(value).encode())


def _is(value: Any, package: str) -> bool:
    """Type check without importing the package (small-value cases never import pandas)."""
    return type(value).__module__.split(".")[0] == package


def check_equal(expected: Any, got: Any) -> None:
    """Raise AssertionError unless ``got`` is exactly ``expected`` (type, dtypes, values)."""
    if _is(expected, "pandas"):
        import pandas as pd

        if not isinstance(got, pd.DataFrame):
            raise AssertionError(f"expected a DataFrame, got {type(got).__module__}.{type(got).__name__}")
        pd.testing.assert_frame_equal(got, expected, check_exact=True, check_dtype=True)
        return
    if _is(expected, "numpy"):
        import numpy as np

        if not isinstance(got, np.ndarray):
            raise AssertionError(f"expected an ndarray, got {type(got).__module__}.{type(got).__name__}")
        if got.dtype != expected.dtype or got.shape != expected.shape:
            raise AssertionError(f"got {got.dtype} {got.shape}, expected {expected.dtype} {expected.shape}")
        if not np.array_equal(got, expected):
            raise AssertionError("array values differ")
        return
    if type(got) is not type(expected) or got != expected:
        raise AssertionError(f"got {got!r:.200}, expected {expected!r:.200}")
