"""How cost grows: the sweeps of ``bench.run --sweep size,fanin,concurrency``.

A sweep is a series of ordinary cases (the same ``bench.case`` processes, one per (case, store,
contender)) along one axis; each case dict carries ``sweep`` (its axis) and ``x`` (its point),
copied into every result so that ``bench.plots`` can find the series in the JSON.

- ``size``: one DataFrame (the bench's usual one, ``bench.payloads``) of 1, 2, 4, ... 1,024 MiB
  (``--max-mib`` caps it), every contender: push, pull, total and peak RSS per point.
- ``fanin``: N DataFrames of ``--fanin-kib`` (100 KiB) pushed with map_index 0..N-1, then all
  pulled into one list, N = 10, 20, 50, ... 10,000 (``--max-width`` caps it). 100 KiB, not the
  1 MiB of the ``fanin*`` cases: 10,000 items of 1 MiB are 10 GiB that the fan-in task holds in
  one list; 10,000 of 100 KiB are about 1 GiB, the top of the size sweep. 100 KiB is still above
  xcomstash's 64 KiB inline threshold, so every item is an object in the store (a smaller item
  would stay in the row and the sweep would measure the database path).
- ``concurrency``: W = 1, 2, 4, 8, 16 worker processes (``--max-workers`` caps it), each pushing
  and pulling its own DataFrame of ``--concurrency-mib`` (32 MiB) at the same time; xcomstash
  against the store's raw client (boto3 on S3) moving as many bytes as xcomstash stored. Every
  worker is a ``bench.case`` process of its own; each imports, warms up and builds its value,
  then waits at the group's start line (a ready file, then a line on stdin that the orchestrator
  writes to all of them at once). The group's wall time runs from that common start to the last
  worker's finish; aggregate throughput = W x value MiB / wall time.

Nothing here imports Airflow.
"""

from __future__ import annotations

from typing import Any

from bench import payloads

MIB = 1024 * 1024
SWEEPS = ("size", "fanin", "concurrency")
#: Doubling from 1 MiB to 1 GiB.
SIZES_MIB = tuple(2**i for i in range(11))
#: 1-2-5 steps from 10 to 10,000 items.
WIDTHS = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
WORKERS = (1, 2, 4, 8, 16)
FANIN_KIB = 100
CONCURRENCY_MIB = 32
#: The contenders of a concurrency point: xcomstash against the store's own client.
CONCURRENCY_CONTENDERS = ("xcomstash", "raw")
#: Seeds of the workers' values: SEED + WORKER_SEED + worker, distinct from every other payload
#: (identical values would share one content-addressed object in xcomstash's store).
WORKER_SEED = 100_000


def parse(values: list[str]) -> list[str]:
    """``--sweep size --sweep fanin,concurrency`` (or ``all``) -> the sweeps, in canonical order."""
    chosen = {v.strip() for value in values for v in value.split(",") if v.strip()}
    if "all" in chosen:
        chosen = set(SWEEPS)
    unknown = sorted(chosen - set(SWEEPS))
    if unknown:
        raise ValueError(f"unknown sweep {', '.join(unknown)}; known: {', '.join(SWEEPS)}, all")
    return [s for s in SWEEPS if s in chosen]


def size_cases(max_mib: float) -> list[dict[str, Any]]:
    return [
        {"name": f"size{mib}mb", "kind": "frame", "nominal_mb": mib, "rows": payloads.rows_for_mib(mib),
         "label": f"DataFrame {mib:,} MB", "sweep": "size", "x": mib}
        for mib in SIZES_MIB
        if mib <= max_mib
    ]


def fanin_cases(max_width: int, item_kib: float = FANIN_KIB) -> list[dict[str, Any]]:
    rows = payloads.rows_for_kib(item_kib)
    return [
        {"name": f"width{n}", "kind": "fanin", "nominal_mb": item_kib / 1024, "count": n,
         "item_mib": item_kib / 1024, "item_rows": rows, "label": f"fan-in {n:,} x {item_kib:g} KB",
         "sweep": "fanin", "x": n}
        for n in WIDTHS
        if n <= max_width
    ]


def concurrency_cases(max_workers: int, mib: float = CONCURRENCY_MIB) -> list[dict[str, Any]]:
    return [
        {"name": f"conc{w}", "kind": "concurrency", "nominal_mb": mib, "rows": payloads.rows_for_mib(mib),
         "workers": w, "label": f"{w} worker{'s' if w > 1 else ''} x DataFrame {mib:g} MB",
         "sweep": "concurrency", "x": w}
        for w in WORKERS
        if w <= max_workers
    ]


def cases(sweeps: list[str], *, max_mib: float, max_width: int, max_workers: int,
          fanin_kib: float, concurrency_mib: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if "size" in sweeps:
        out += size_cases(max_mib)
    if "fanin" in sweeps:
        out += fanin_cases(max_width, fanin_kib)
    if "concurrency" in sweeps:
        out += concurrency_cases(max_workers, concurrency_mib)
    return out


def worker_case(case: dict[str, Any], worker: int) -> dict[str, Any]:
    """Worker ``worker`` of a concurrency group: its own value (seed) and coordinate (map_index)."""
    return dict(case, seed=payloads.SEED + WORKER_SEED + worker, map_index=worker)


def tag(result: dict[str, Any], case: dict[str, Any]) -> dict[str, Any]:
    """Copy a sweep case's axis and point into its result (for ``bench.plots``)."""
    if case.get("sweep"):
        result["sweep"] = case["sweep"]
        result["x"] = case["x"]
    return result


def aggregate(case: dict[str, Any], workers: list[dict[str, Any]], start: float) -> dict[str, Any]:
    """One result for a concurrency group from its workers' results and the common start
    (``time.time()`` when the orchestrator released them). Not ok unless every worker is."""
    n = case["workers"]
    bad = [w for w in workers if w.get("status") != "ok"]
    out: dict[str, Any] = {
        "status": "ok",
        "error": None,
        "workers": n,
        "value_mib": case["nominal_mb"],
        "per_worker": [
            {k: w.get(k) for k in ("status", "push_s", "pull_s", "peak_rss_mb", "payload_bytes", "pid")}
            | {"started_s": _since(w.get("started_at"), start), "finished_s": _since(w.get("finished_at"), start)}
            for w in workers
        ],
    }
    if bad:
        first = bad[0]
        out.update(status=first.get("status", "ERROR"),
                   error=f"{len(bad)} of {n} workers not ok; first: {first.get('error')}",
                   push_s=None, pull_s=None, total_s=None)
        if first.get("traceback"):
            out["traceback"] = first["traceback"]
        return out
    ok = workers
    wall = max(w["finished_at"] for w in ok) - start
    out.update(
        wall_s=round(wall, 4),
        # For the tables: the group's wall time is its total; push / pull are the slowest worker's.
        total_s=round(wall, 4),
        push_s=round(max(w["push_s"] for w in ok), 4),
        pull_s=round(max(w["pull_s"] for w in ok), 4),
        start_skew_s=round(max(w["started_at"] for w in ok) - start, 4),
        payload_bytes=sum(w["payload_bytes"] for w in ok),
        agg_mib_s=round(n * case["nominal_mb"] / wall, 2) if wall > 0 else None,
        peak_rss_mb=max(w["peak_rss_mb"] for w in ok),
        rss_start_mb=max(w.get("rss_start_mb") or 0 for w in ok),
        row_bytes=sum(w.get("row_bytes") or 0 for w in ok),
        import_s=max(w.get("import_s") or 0 for w in ok),
        warmup_s=max(w.get("warmup_s") or 0 for w in ok),
    )
    for key in ("raw_how", "raw_source"):
        if ok[0].get(key):
            out[key] = ok[0][key]
    return out


def _since(t: float | None, start: float) -> float | None:
    return None if t is None else round(t - start, 4)


def moved(result: dict[str, Any]) -> None:
    """Add ``stored_mib_s``: bytes stored by the whole group (one copy), written and read back,
    per second of the group's wall time (call after the orchestrator measured the store)."""
    if result.get("status") == "ok" and result.get("object_bytes") and result.get("wall_s"):
        one_copy = result["object_bytes"] / (result.get("copies") or 1)
        result["stored_mib_s"] = round(2 * one_copy / MIB / result["wall_s"], 2)


# ------------------------------------------------------------------------------ report


def render(console: Any, results: list[dict[str, Any]], stores: list[str]) -> None:
    """Compact tables of the sweeps: one line per point, one column per contender."""
    from rich.table import Table

    swept = [r for r in results if r.get("sweep")]
    for sweep in SWEEPS:
        rows = [r for r in swept if r["sweep"] == sweep]
        if not rows:
            continue
        for store in stores:
            mine = [r for r in rows if r.get("store") in (store, "any")]
            if not any(r.get("store") == store for r in mine):
                continue
            who = [c for c in _order(sweep) if any(r["contender"] == c for r in mine)]
            title = {
                "size": "total s (peak RSS MiB) against DataFrame size",
                "fanin": "total s (peak RSS MiB) against fan-in width",
                "concurrency": "aggregate MiB/s (group wall s) against worker processes",
            }[sweep]
            console.print(f"[bold]sweep {sweep}, store {store}[/]: {title}")
            table = Table(header_style="bold")
            table.add_column({"size": "MiB", "fanin": "width", "concurrency": "workers"}[sweep], justify="right")
            for c in who:
                table.add_column(c, justify="right")
            for x in sorted({r["x"] for r in mine}):
                cells = []
                for c in who:
                    r = next((r for r in mine if r["x"] == x and r["contender"] == c), None)
                    cells.append(_cell(sweep, r))
                table.add_row(f"{x:,}", *cells)
            console.print(table)
    if swept:
        console.print("[dim]sweeps: concurrency throughput = workers x value MiB ÷ wall time from the common start "
                      "to the last finish; see bench/README.md[/]")
        console.print()


def _order(sweep: str) -> list[str]:
    if sweep == "concurrency":
        return list(CONCURRENCY_CONTENDERS)
    return ["xcomstash", "common.io", "BaseXCom", "baseline", "raw"]


def _cell(sweep: str, r: dict[str, Any] | None) -> str:
    if r is None:
        return ""
    if r.get("status") != "ok":
        return str(r.get("status"))
    if sweep == "concurrency":
        return f"{r.get('agg_mib_s') or 0:,.1f} ({r['wall_s']:.2f} s)"
    peak = r.get("peak_rss_mb")
    return f"{r['total_s']:.3f}" + ("" if peak is None else f" ({peak:,.0f})")
