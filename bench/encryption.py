"""Encryption overhead on the 300 MB DataFrame: push + pull through the engine, with and
without encryption, on the local store, in one process, alternating the configurations so
machine noise hits both alike.

    .venv/bin/python -m bench.encryption [--mib 300] [--reps 5] [--json out.json]

Reported: median push, pull and total seconds per configuration, and the overhead of
encryption on the median total against the plain engine (same dedup setting, and the default);
also the CPU seconds (all threads of the process, ``time.process_time``), which a busy machine
disturbs far less than wall-clock time.
Every pulled frame is checked against the pushed one (``DataFrame.equals``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import payloads


def _engine(root: Path, mode: str) -> Any:
    from xcomstash import Engine, StashConfig
    from xcomstash.security.crypto.keyset import KeyRing, Keyset
    from xcomstash.security.guard import Guard, SecurityConfig

    config = StashConfig(store_url=f"file://{root}", threshold=0, read_ahead=False, dedup=(mode == "plain"))
    if mode != "encrypted":
        return Engine(config)
    security = SecurityConfig(keyring=KeyRing.single(Keyset.generate()), encrypt=True, sign_references=True)
    return Engine(config, guard=Guard(security))


def run(mib: int, reps: int) -> dict[str, Any]:
    from xcomstash import XComCoordinate

    frame = payloads.make_frame(payloads.rows_for_mib(mib))
    modes = ["plain", "plain-nodedup", "encrypted"]
    times: dict[str, dict[str, list[float]]] = {m: {"push": [], "pull": [], "total": [], "cpu": []} for m in modes}
    stored: dict[str, int] = {}
    for rep in range(reps + 1):  # the first round warms up (imports, page cache) and is dropped
        for mode in modes if rep % 2 == 0 else list(reversed(modes)):
            root = Path(tempfile.mkdtemp(prefix=f"xcs-bench-enc-{mode}-"))
            try:
                engine = _engine(root, mode)
                coord = XComCoordinate("bench_enc", f"run_{rep}", "extract", -1, "return_value")
                c0 = time.process_time()
                t0 = time.perf_counter()
                row = engine.serialize(frame, coord)
                t1 = time.perf_counter()
                back = engine.deserialize(row, coord)
                t2 = time.perf_counter()
                c2 = time.process_time()
                if not back.equals(frame):
                    raise AssertionError(f"{mode}: pulled frame differs")
                del back
                stored[mode] = row["size"]
                if rep:
                    times[mode]["push"].append(t1 - t0)
                    times[mode]["pull"].append(t2 - t1)
                    times[mode]["total"].append(t2 - t0)
                    times[mode]["cpu"].append(c2 - c0)
            finally:
                shutil.rmtree(root, ignore_errors=True)
    med = {m: {k: round(statistics.median(v), 3) for k, v in t.items()} for m, t in times.items()}
    return {
        "mib": mib,
        "rows": len(frame),
        "reps": reps,
        "median_s": med,
        "stored_bytes": stored,
        "overhead_vs_plain_nodedup": round(med["encrypted"]["total"] / med["plain-nodedup"]["total"] - 1, 4),
        "overhead_vs_plain_default": round(med["encrypted"]["total"] / med["plain"]["total"] - 1, 4),
        "cpu_overhead_vs_plain_nodedup": round(med["encrypted"]["cpu"] / med["plain-nodedup"]["cpu"] - 1, 4),
        "min_total_overhead_vs_plain_nodedup": round(
            min(times["encrypted"]["total"]) / min(times["plain-nodedup"]["total"]) - 1, 4
        ),
        "all_s": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=300)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.mib, args.reps)
    for mode, m in result["median_s"].items():
        print(f"{mode:14s} push {m['push']:.3f}s  pull {m['pull']:.3f}s  total {m['total']:.3f}s  "
              f"cpu {m['cpu']:.3f}s  stored {result['stored_bytes'][mode]:,} bytes")
    print(f"encryption overhead on the median total: {result['overhead_vs_plain_nodedup']:+.1%} vs plain "
          f"(dedup off, as under encryption), {result['overhead_vs_plain_default']:+.1%} vs the default; "
          f"best total {result['min_total_overhead_vs_plain_nodedup']:+.1%}; CPU seconds "
          f"{result['cpu_overhead_vs_plain_nodedup']:+.1%}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
