"""Figures of the sweeps (``bench.run --sweep ...``) from the results JSON, as PNG files.

    .venv/bin/python -m bench.plots bench/results/sweep.json docs/img/

One figure per sweep and store (file names ``<figure>-<store>.png``):

- ``size-time``: total seconds (push + pull) against DataFrame size, log-log, one line per
  contender; the store's raw client and the bare Arrow IPC baseline drawn as limit lines.
- ``size-memory``: two panels against DataFrame size, log-log, each with the payload's own size
  as the limit line: peak RSS (which includes the interpreter and its imports, 100-250 MiB), and
  peak RSS minus the RSS before the payload was built (what the value and its round trip cost).
  The raw client is left out (it holds random bytes of the stored size, not the value).
- ``fanin-time``: total seconds against fan-in width, log-log; the bare baseline as the limit line.
- ``concurrency``: aggregate throughput (workers x value MiB / wall time) against the number of
  worker processes; the store's raw client (boto3 on S3) as the limit line.

Only points whose status is ``ok`` are drawn; a store with no ok point of a sweep gets no figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
#: Contenders drawn as measurements (solid lines with markers), in legend order.
MEASURED = ("xcomstash", "common.io", "BaseXCom")
#: How each contender is drawn.
STYLE: dict[str, dict[str, Any]] = {
    "xcomstash": {"color": "tab:blue", "marker": "o", "linewidth": 2.2},
    "common.io": {"color": "tab:orange", "marker": "s"},
    "BaseXCom": {"color": "tab:green", "marker": "^"},
    "baseline": {"color": "0.35", "linestyle": ":", "marker": "", "label": "bare Arrow IPC baseline (limit)"},
    "raw": {"color": "black", "linestyle": "--", "marker": "", "label": "store's raw client (limit)"},
}
#: The raw client of each store, for the legends.
RAW_CLIENT = {
    "local": "plain file write / read",
    "s3": "boto3",
    "gcs": "google-cloud-storage",
    "azure": "azure-storage-blob",
    "redis": "redis-py",
    "replicated": "each member's client",
}


def load(path: str | Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or "results" not in data:
        raise ValueError(f"{path}: not a bench.run results file (no 'results')")
    return data


def stores_of(results: list[dict[str, Any]], sweep: str) -> list[str]:
    """The stores a sweep ran on, in the order they appear (BaseXCom's ``any`` is no store)."""
    out: list[str] = []
    for r in results:
        if r.get("sweep") == sweep and r.get("store") not in (None, "any") and r["store"] not in out:
            out.append(r["store"])
    return out


def series(results: list[dict[str, Any]], sweep: str, store: str, contender: str, key: str) -> list[tuple[float, float]]:
    """(x, value) of the ok points of one contender on one store (or on ``any``), sorted by x."""
    points = {
        r["x"]: r[key]
        for r in results
        if r.get("sweep") == sweep and r.get("contender") == contender and r.get("store") in (store, "any")
        and r.get("status") == "ok" and r.get(key) is not None
    }
    return sorted(points.items())


def _draw(ax: Any, pts: list[tuple[float, float]], contender: str, label: str | None = None) -> bool:
    if not pts:
        return False
    style = dict(STYLE.get(contender, {}))
    label = label or style.pop("label", contender)
    style.pop("label", None)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, **style)
    return True


def _raw_label(store: str) -> str:
    return f"raw client, {RAW_CLIENT.get(store, store)} (limit)"


def _ticks(ax: Any, xs: list[float]) -> None:
    """The sweep's own points as plain numbers on a log axis (1, 2, 4, ... rather than 2^n)."""
    from matplotlib.ticker import NullFormatter

    xs = sorted(set(xs))
    ax.set_xticks(xs, [f"{x:,g}" for x in xs])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _plain_log_y(ax: Any) -> None:
    """Plain numbers (0.5, 2, 100) on a log y axis; minor ticks (2, 3 and 5 of each decade)
    labelled only when the axis spans less than about two decades (more would crowd it)."""
    import math

    from matplotlib.ticker import FuncFormatter, NullFormatter

    def minor(v: float, _pos: Any) -> str:  # 2, 3 and 5 of each decade
        return f"{v:g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 3, 5) else ""

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    low, high = ax.get_ylim()
    few = low > 0 and math.log10(high / low) < 1.8
    ax.yaxis.set_minor_formatter(FuncFormatter(minor) if few else NullFormatter())


def _figure(title: str, xlabel: str, ylabel: str, *, loglog: bool = True, panels: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(7.5 * panels ** 0.8, 4.8), dpi=110, squeeze=False)
    fig.suptitle(title, fontsize=11)
    for ax in axes[0]:
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if loglog:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
        ax.grid(True, which="major", alpha=0.35)
        ax.grid(True, which="minor", alpha=0.12)
    return fig, (axes[0][0] if panels == 1 else list(axes[0]))


def _save(fig: Any, ax: Any, out: Path, footnote: str) -> Path:
    import matplotlib.pyplot as plt

    for one in ax if isinstance(ax, list) else [ax]:
        one.legend(fontsize=8, loc="best")
        if one.get_yscale() == "log":
            _plain_log_y(one)
    fig.text(0.01, 0.01, footnote, fontsize=7, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out, format="png")
    plt.close(fig)
    return out


def _footnote(meta: dict[str, Any]) -> str:
    parts = [f"bench.run {meta.get('started', '')}".strip()]
    if meta.get("cpus"):
        parts.append(f"{meta['cpus']} CPUs")
    versions = meta.get("versions") or {}
    if versions.get("xcomstash"):
        parts.append(f"xcomstash {versions['xcomstash']}")
    return ", ".join(parts)


def _xs(results: list[dict[str, Any]], sweep: str, store: str) -> list[float]:
    return [r["x"] for r in results
            if r.get("sweep") == sweep and r.get("store") in (store, "any") and r.get("status") == "ok"]


def size_time(results: list[dict[str, Any]], store: str, out: Path, note: str) -> Path | None:
    fig, ax = _figure(f"Round trip time against value size, store {store}",
                      "DataFrame size (MiB)", "push + pull (s)")
    drawn = [_draw(ax, series(results, "size", store, c, "total_s"), c) for c in MEASURED]
    drawn.append(_draw(ax, series(results, "size", store, "raw", "total_s"), "raw", _raw_label(store)))
    drawn.append(_draw(ax, series(results, "size", store, "baseline", "total_s"), "baseline"))
    if not any(drawn):
        return _discard(fig)
    _ticks(ax, _xs(results, "size", store))
    return _save(fig, ax, out, note)


def _net_mb(r: dict[str, Any]) -> float | None:
    if r.get("peak_rss_mb") is None or r.get("rss_start_mb") is None:
        return None
    return max(r["peak_rss_mb"] - r["rss_start_mb"], 0.01)


def size_memory(results: list[dict[str, Any]], store: str, out: Path, note: str) -> Path | None:
    fig, (peak_ax, net_ax) = _figure(f"Memory against value size, store {store}", "DataFrame size (MiB)",
                                     "MiB", panels=2)
    peak_ax.set_title("peak RSS", fontsize=10)
    net_ax.set_title("peak RSS − RSS before the payload was built", fontsize=10)
    with_net = [dict(r, net_mb=_net_mb(r)) for r in results]
    drawn = []
    for c in (*MEASURED, "baseline"):
        label = "bare Arrow IPC baseline" if c == "baseline" else None
        drawn.append(_draw(peak_ax, series(results, "size", store, c, "peak_rss_mb"), c, label))
        _draw(net_ax, series(with_net, "size", store, c, "net_mb"), c, label)
    if not any(drawn):
        return _discard(fig)
    payload = {
        r["x"]: r["payload_bytes"] / MIB
        for r in results
        if r.get("sweep") == "size" and r.get("payload_bytes") and r.get("contender") != "raw"
        and r.get("status") == "ok"
    }
    xs = sorted(payload)
    for ax in (peak_ax, net_ax):
        if payload:
            ax.plot(xs, [payload[x] for x in xs], color="black", linestyle="--", label="the payload itself (limit)")
        _ticks(ax, _xs(results, "size", store))
    return _save(fig, [peak_ax, net_ax], out, note)


def fanin_time(results: list[dict[str, Any]], store: str, out: Path, note: str, item: str) -> Path | None:
    fig, ax = _figure(f"Fan-in time against width ({item} items), store {store}",
                      "fan-in width (items)", "push all + pull all (s)")
    drawn = [_draw(ax, series(results, "fanin", store, c, "total_s"), c) for c in (*MEASURED, "baseline")]
    if not any(drawn):
        return _discard(fig)
    _ticks(ax, _xs(results, "fanin", store))
    return _save(fig, ax, out, note)


def concurrency(results: list[dict[str, Any]], store: str, out: Path, note: str, value: str) -> Path | None:
    fig, ax = _figure(f"Aggregate throughput against worker processes ({value} each), store {store}",
                      "worker processes pushing and pulling at once", "aggregate MiB/s (workers x value / wall)",
                      loglog=False)
    ax.set_xscale("log", base=2)
    drawn = [_draw(ax, series(results, "concurrency", store, "xcomstash", "agg_mib_s"), "xcomstash"),
             _draw(ax, series(results, "concurrency", store, "raw", "agg_mib_s"), "raw", _raw_label(store))]
    if not any(drawn):
        return _discard(fig)
    ax.set_ylim(bottom=0)
    _ticks(ax, _xs(results, "concurrency", store))
    return _save(fig, ax, out, note)


def _discard(fig: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)
    return None


def plot(data: dict[str, Any], outdir: str | Path) -> list[Path]:
    """Write every figure the results allow into ``outdir``; return the files written."""
    results = data["results"]
    meta = data.get("meta") or {}
    note = _footnote(meta)
    sweeps = meta.get("sweeps") or {}
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path | None] = []
    for store in stores_of(results, "size"):
        written.append(size_time(results, store, out / f"size-time-{store}.png", note))
        written.append(size_memory(results, store, out / f"size-memory-{store}.png", note))
    item = f"{sweeps.get('fanin_kib', 100):g} KiB"
    for store in stores_of(results, "fanin"):
        written.append(fanin_time(results, store, out / f"fanin-time-{store}.png", note, item))
    value = f"{sweeps.get('concurrency_mib', 32):g} MiB"
    for store in stores_of(results, "concurrency"):
        written.append(concurrency(results, store, out / f"concurrency-{store}.png", note, value))
    return [p for p in written if p is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plots", description=__doc__.split("\n")[0])
    parser.add_argument("results", help="the JSON written by bench.run --sweep ... --json PATH")
    parser.add_argument("outdir", help="directory for the PNG files (created if missing)")
    args = parser.parse_args(argv)
    try:
        data = load(args.results)
    except (OSError, ValueError) as exc:
        print(f"bench.plots: {exc}", file=sys.stderr)
        return 2
    files = plot(data, args.outdir)
    if not files:
        print(f"bench.plots: {args.results} has no ok sweep results (run bench.run --sweep ...)", file=sys.stderr)
        return 1
    for path in files:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
