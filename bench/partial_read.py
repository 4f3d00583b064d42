"""Partial reads: one of nine columns of the benchmark DataFrame, against a full read.

Usage: .venv/bin/python -m bench.partial_read [--mib 300] [--stores local,s3] [--json]

Prints, per store, the time and bytes fetched for a full read and for reading column ``x0``
alone (``Engine.read_table``), both verified. Engine level, in one process, no Airflow.
``bench.run`` calls it (with ``--json`` and its own SeaweedFS) after the main cases.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from bench.payloads import make_frame, rows_for_mib
from xcomstash import Engine, StashConfig, XComCoordinate

COLUMN = "x0"  # a float64 column of noise: 1/9 of the frame


def measure(engine: Engine, df: pd.DataFrame, store: str) -> dict[str, Any]:
    coordinate = XComCoordinate("bench_partial", "run", "extract", -1, "return_value")
    ref = engine.serialize(df, coordinate)
    started = time.perf_counter()
    full = engine.deserialize(ref, readahead=False)
    full_s = time.perf_counter() - started
    del full
    started = time.perf_counter()
    part, stats = engine.read_table(ref, columns=[COLUMN])
    part_s = time.perf_counter() - started
    pd.testing.assert_series_equal(part[COLUMN], df[COLUMN])
    assert stats is not None
    return {
        "store": store,
        "rows": df.shape[0],
        "columns": df.shape[1],
        "object_bytes": ref["size"],
        "full_read_s": round(full_s, 4),
        "partial_read_s": round(part_s, 4),
        "partial_bytes_fetched": stats.bytes_fetched,
        "frames_fetched": stats.frames_fetched,
        "frames_total": stats.frames_total,
    }


def describe(r: dict[str, Any]) -> str:
    mib = 2**20
    return (
        f"{r['store']:6} object {r['object_bytes'] / mib:8.1f} MiB | full read {r['full_read_s']:6.3f} s | "
        f"1 of {r['columns']} columns {r['partial_read_s']:6.3f} s, {r['partial_bytes_fetched'] / mib:6.1f} MiB "
        f"fetched ({r['partial_bytes_fetched'] / r['object_bytes']:.0%}, {r['frames_fetched']}/{r['frames_total']} "
        f"frames) | {r['full_read_s'] / r['partial_read_s']:.1f}x faster"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=float, default=300)
    parser.add_argument("--stores", default="local,s3")
    parser.add_argument("--json", action="store_true", help="one JSON line per store")
    parser.add_argument("--s3-endpoint", help="use this S3 server instead of starting SeaweedFS")
    parser.add_argument("--s3-bucket", default="bench")
    parser.add_argument("--s3-keys", default="benchkey:benchsecret", help="ACCESS:SECRET")
    args = parser.parse_args()
    df = make_frame(rows_for_mib(args.mib))
    emit = (lambda r: print(json.dumps(r), flush=True)) if args.json else (lambda r: print(describe(r)))
    if not args.json:
        print(f"DataFrame {df.shape[0]:,} rows x {df.shape[1]} cols")
    with tempfile.TemporaryDirectory() as tmp:
        if "local" in args.stores:
            emit(measure(Engine(StashConfig(store_url=f"file://{tmp}/store", threshold=0)), df, "local"))
        if "s3" in args.stores:
            from tests.harness.servers import s3_client, start_seaweedfs

            server = None
            if args.s3_endpoint:
                access, secret = args.s3_keys.split(":", 1)
                client, bucket = s3_client(args.s3_endpoint, access, secret), args.s3_bucket
            else:
                server = start_seaweedfs(Path(tmp) / "weed")
                client, bucket = server.client(), server.bucket
            try:
                engine = Engine(
                    StashConfig(store_url=f"s3://{bucket}/partial-{time.time_ns()}", threshold=0, cache_dir=None),
                    clients=lambda location: client,
                )
                emit(measure(engine, df, "s3"))
            finally:
                if server is not None:
                    server.stop()


if __name__ == "__main__":
    main()
