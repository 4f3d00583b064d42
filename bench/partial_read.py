"""Partial reads: one of nine columns of the benchmark DataFrame, against a full read.

Usage: .venv/bin/python -m bench.partial_read [--mib 300] [--stores local,s3]

Prints, per store, the time and bytes fetched for a full read and for reading column ``x0``
alone (``Engine.read_table``), both verified. Engine level, in one process, no Airflow.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.payloads import make_frame, rows_for_mib
from xcomstash import Engine, StashConfig, XComCoordinate

COLUMN = "x0"  # a float64 column of noise: 1/9 of the frame


def measure(engine: Engine, df: pd.DataFrame, label: str) -> None:
    coordinate = XComCoordinate("bench_partial", "run", "extract", -1, "return_value")
    ref = engine.serialize(df, coordinate)
    started = time.perf_counter()
    full = engine.deserialize(ref, readahead=False)
    full_s = time.perf_counter() - started
    started = time.perf_counter()
    part, stats = engine.read_table(ref, columns=[COLUMN])
    part_s = time.perf_counter() - started
    pd.testing.assert_series_equal(part[COLUMN], df[COLUMN])
    assert full.shape == df.shape and stats is not None
    print(
        f"{label:6} object {ref['size'] / 2**20:8.1f} MiB | full read {full_s:6.3f} s, "
        f"{ref['size'] / 2**20:8.1f} MiB fetched | 1 of {df.shape[1]} columns {part_s:6.3f} s, "
        f"{stats.bytes_fetched / 2**20:6.1f} MiB fetched ({stats.bytes_fetched / ref['size']:.0%}, "
        f"{stats.frames_fetched}/{stats.frames_total} frames) | {full_s / part_s:.1f}x faster"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=float, default=300)
    parser.add_argument("--stores", default="local,s3")
    args = parser.parse_args()
    df = make_frame(rows_for_mib(args.mib))
    print(f"DataFrame {df.shape[0]:,} rows x {df.shape[1]} cols")
    with tempfile.TemporaryDirectory() as tmp:
        if "local" in args.stores:
            measure(Engine(StashConfig(store_url=f"file://{tmp}/store", threshold=0)), df, "local")
        if "s3" in args.stores:
            from tests.servers import start_seaweedfs

            server = start_seaweedfs(Path(tmp) / "weed")
            try:
                client = server.client()
                engine = Engine(
                    StashConfig(store_url=f"s3://{server.bucket}/partial", threshold=0),
                    s3_client_factory=lambda _conn: client,
                )
                measure(engine, df, "s3")
            finally:
                server.stop()


if __name__ == "__main__":
    main()
