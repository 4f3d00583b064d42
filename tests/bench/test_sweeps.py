"""The sweeps of ``bench.run`` (bench/sweeps.py) and their figures (bench/plots.py).

One tiny real run on the local store: the size and fan-in sweeps with the contenders that do not
import Airflow (baseline, raw: the same case machinery, a second or less a process), and the
concurrency sweep with xcomstash and the raw client (1 and 2 worker processes). The figures are
built from the JSON those runs write. About 15 s on an idle 2-core machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import payloads, plots
from bench import sweeps as W

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
#: xcomstash's default inline threshold: a fan-in item below it would stay in the row.
INLINE_THRESHOLD = 64 * 1024


def _bench_run(json_path: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--stores", "local", "--timeout", "300", "--json", str(json_path), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"bench.run {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return json.loads(json_path.read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("sweeps")
    grow = _bench_run(tmp / "grow.json", "--sweep", "size,fanin", "--max-mib", "2", "--max-width", "20",
                      "--contenders", "baseline,raw")
    conc = _bench_run(tmp / "conc.json", "--sweep", "concurrency", "--max-workers", "2", "--concurrency-mib", "1")
    return {"grow": grow, "conc": conc, "tmp": tmp, "paths": (tmp / "grow.json", tmp / "conc.json")}


def _points(data: dict[str, Any], sweep: str, contender: str) -> dict[Any, dict[str, Any]]:
    return {r["x"]: r for r in data["results"] if r.get("sweep") == sweep and r["contender"] == contender}


# --------------------------------------------------------------------------- pure


def test_sweep_points_double_in_size_and_step_1_2_5_in_width_up_to_the_caps() -> None:
    assert [c["x"] for c in W.size_cases(1024)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    assert [c["x"] for c in W.size_cases(256)][-1] == 256
    assert [c["x"] for c in W.fanin_cases(10_000)] == [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
    assert [c["x"] for c in W.fanin_cases(50)] == [10, 20, 50]
    assert [c["x"] for c in W.concurrency_cases(16)] == [1, 2, 4, 8, 16]
    assert [c["workers"] for c in W.concurrency_cases(3)] == [1, 2]


def test_fanin_sweep_items_are_100_kib_and_above_the_inline_threshold() -> None:
    (case,) = W.fanin_cases(10)
    item = payloads.make_fanin_item(0, case["item_mib"], case["item_rows"])
    size = payloads.nbytes(item)
    assert INLINE_THRESHOLD < size and abs(size - 100 * 1024) < 5 * 1024


def test_concurrency_workers_get_distinct_values_and_coordinates() -> None:
    (case,) = [c for c in W.concurrency_cases(2) if c["workers"] == 2]
    a, b = W.worker_case(case, 0), W.worker_case(case, 1)
    assert a["seed"] != b["seed"] and a["map_index"] != b["map_index"]
    assert a["seed"] != payloads.SEED


def test_parse_sweeps_accepts_all_and_names_an_unknown_one() -> None:
    assert W.parse(["concurrency,size"]) == ["size", "concurrency"]
    assert W.parse(["all"]) == list(W.SWEEPS)
    with pytest.raises(ValueError, match="unknown sweep widths"):
        W.parse(["size", "widths"])


def test_a_group_is_timed_from_the_common_start_to_the_last_finish_and_fails_with_any_worker() -> None:
    case = W.concurrency_cases(2, mib=4)[1]
    worker = {"status": "ok", "push_s": 0.1, "pull_s": 0.1, "payload_bytes": 4 * MIB, "peak_rss_mb": 300.0}
    ok = W.aggregate(case, [dict(worker, started_at=100.01, finished_at=100.5),
                            dict(worker, started_at=100.02, finished_at=101.0)], start=100.0)
    assert ok["status"] == "ok" and ok["wall_s"] == 1.0 and ok["agg_mib_s"] == 8.0 and ok["start_skew_s"] == 0.02
    bad = W.aggregate(case, [dict(worker, started_at=100.0, finished_at=100.5),
                             {"status": "ERROR", "error": "push: boom"}], start=100.0)
    assert bad["status"] == "ERROR" and "1 of 2 workers" in bad["error"] and "boom" in bad["error"]
    assert bad["total_s"] is None


def test_plots_write_nothing_and_fail_without_an_ok_sweep_point(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"meta": {}, "results": [
        {"sweep": "size", "x": 1, "store": "local", "contender": "xcomstash", "status": "ERROR", "total_s": None}]}))
    assert plots.main([str(path), str(tmp_path / "img")]) == 1
    assert list((tmp_path / "img").iterdir()) == []
    path.write_text("[]")
    assert plots.main([str(path), str(tmp_path / "img")]) == 2


# ----------------------------------------------------------------- one real run


def test_size_and_fanin_sweeps_run_every_point_and_tag_it(runs: dict[str, Any]) -> None:
    grow = runs["grow"]
    assert grow["meta"]["sweeps"]["selected"] == ["size", "fanin"]
    assert all(r["status"] == "ok" for r in grow["results"]), [r for r in grow["results"] if r["status"] != "ok"]
    for contender in ("baseline", "raw"):
        assert sorted(_points(grow, "size", contender)) == [1, 2]
    sizes = _points(grow, "size", "baseline")
    assert sizes[2]["payload_bytes"] > 1.8 * sizes[1]["payload_bytes"]
    widths = _points(grow, "fanin", "baseline")
    assert sorted(widths) == [10, 20]
    assert widths[20]["items"] == 20 and widths[20]["payload_bytes"] > 20 * INLINE_THRESHOLD
    assert not _points(grow, "fanin", "raw")  # fan-in has no single object for a raw transfer


def test_concurrency_sweep_releases_every_worker_and_sizes_raw_by_xcomstash(runs: dict[str, Any]) -> None:
    conc = runs["conc"]
    assert all(r["status"] == "ok" for r in conc["results"]), [r for r in conc["results"] if r["status"] != "ok"]
    xs, raw = _points(conc, "concurrency", "xcomstash"), _points(conc, "concurrency", "raw")
    assert sorted(xs) == sorted(raw) == [1, 2]
    for n in (1, 2):
        for r in (xs[n], raw[n]):
            assert len(r["per_worker"]) == n == r["workers"]
            assert len({w["pid"] for w in r["per_worker"]}) == n  # a process each
            assert all(0 <= w["started_s"] <= w["finished_s"] <= r["wall_s"] for w in r["per_worker"])
            # wall_s is rounded to 0.1 ms: on a fast run that alone is over 1 % of it
            assert r["agg_mib_s"] == pytest.approx(n * 1 / r["wall_s"], rel=0.01 + 0.00005 / r["wall_s"])
        # one object per worker (distinct values: nothing shared by content), and the raw
        # workers moved one worker's share of those bytes each
        assert xs[n]["objects"] == n
        assert all(w["payload_bytes"] == xs[n]["object_bytes"] // n for w in raw[n]["per_worker"])


def test_plots_draw_every_sweep_as_a_png(runs: dict[str, Any]) -> None:
    import matplotlib.image

    out = runs["tmp"] / "img"
    for path in runs["paths"]:
        assert plots.main([str(path), str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["concurrency-local.png", "fanin-time-local.png", "size-memory-local.png", "size-time-local.png"]
    for name in names:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        pixels = matplotlib.image.imread(out / name)
        assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.shape[1] > 500, (name, pixels.shape)
