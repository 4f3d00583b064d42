"""Cost of the sensitive-data scan (``sensitive_data`` on): per small JSON value, per sampled
table, and once per process (loading detect-secrets and building the detectors).

    .venv/bin/python -m bench.sensitive_scan [--runs 7] [--json out.json]

Reported: the median over ``--runs`` timeit rounds of one ``Scanner.scan_structure`` on a
~1 KiB dict of typical pipeline output (ids, digests, paths, dates, statuses), the same with
``mask_structure``, one ``scan_table`` of a 20,000-row DataFrame with 8 string columns (1,000
rows sampled per column), and the first scan of a fresh process (import + build). With
``sensitive_data = off`` (the default) none of this runs and detect-secrets is not imported.
The numbers are indicative: take them on a quiet machine, and compare runs on the same one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import timeit
import uuid
from typing import Any

_FIRST_SCAN = (
    "import time; t = time.perf_counter()\n"
    "from xcomstash.security.sensitive import Scanner\n"
    "Scanner().scan_structure({'a': 'b'})\n"
    "print(time.perf_counter() - t)\n"
)


def small_value() -> dict[str, Any]:
    ids = [str(uuid.UUID(int=i * 7919 + 1, version=4)) for i in range(6)]
    return {
        "run_id": "scheduled__2026-03-01T00:00:00+00:00",
        "rows": 1234,
        "status": "ok",
        "path": f"s3://lake/raw/dt=2026-03-01/part-00000-{ids[0]}.snappy.parquet",
        "items": [
            {"id": u, "sha256": hashlib.sha256(u.encode()).hexdigest(), "n": i, "city": "Berlin"} for i, u in enumerate(ids)
        ],
    }


def table(rows: int = 20_000) -> Any:
    import pandas as pd

    ids = [str(uuid.UUID(int=i * 7919 + 1, version=4)) for i in range(rows)]
    return pd.DataFrame(
        {
            "id": ids,
            "sha256": [hashlib.sha256(u.encode()).hexdigest() for u in ids],
            "url": [f"https://api.example.com/v2/orders/{u}?page=1" for u in ids],
            "path": [f"/data/raw/2026/03/{i:06d}.csv" for i in range(rows)],
            "created_at": [f"2026-03-01T{i % 24:02d}:{i % 60:02d}:00+00:00" for i in range(rows)],
            "status": ["ok", "failed", "pending", "skipped"] * (rows // 4),
            "city": ["Berlin", "New York", "Zürich", "Tokyo"] * (rows // 4),
            "note": ["nightly load finished without warnings"] * rows,
            "amount": range(rows),
        }
    )


def median_us(fn: Any, number: int, runs: int) -> float:
    return statistics.median(timeit.repeat(fn, number=number, repeat=runs)) / number * 1e6


def run(runs: int) -> dict[str, Any]:
    from xcomstash.security.sensitive import Scanner

    scanner = Scanner()
    value = small_value()
    frame = table()
    scanner.scan_structure(value)  # load and build once, outside the timing
    first = [
        float(subprocess.run([sys.executable, "-c", _FIRST_SCAN], capture_output=True, text=True, check=True).stdout)
        for _ in range(3)
    ]
    return {
        "small_value_bytes": len(json.dumps(value)),
        "scan_structure_us": round(median_us(lambda: scanner.scan_structure(value), 200, runs), 1),
        "mask_structure_us": round(median_us(lambda: scanner.mask_structure(value), 200, runs), 1),
        "scan_table_ms": round(median_us(lambda: scanner.scan_table(frame), 1, runs) / 1000, 1),
        "table_rows": len(frame),
        "first_scan_in_a_fresh_process_ms": round(statistics.median(first) * 1000),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json")
    args = parser.parse_args()
    result = run(args.runs)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
