"""Run ONE (case, store, contender) in this fresh process and print one JSON result line.

    python -m bench.case '<json spec>'

The orchestrator (``bench.run``) builds the spec; see ``run.py`` for its fields. Only the result
goes to stdout; everything else (Airflow and xcomstash logging included) goes to stderr.

Sequence: set the Airflow env -> import the contender -> warm up (a small value of the same kind,
under another dag_id, so lazy imports and the first connection are not timed) -> build the
payload -> reset the peak-RSS counter -> push (timed) -> peak RSS of the push phase -> drop the
payload -> reset the counter -> pull (timed) -> peak RSS of the pull phase -> rebuild the payload
from its seed and compare strictly -> exit; the orchestrator then measures what is stored. A wrong value is ``FAILED`` and
its timings are discarded; an exception is ``ERROR``; a TypeError at push time (the backend
cannot serialize the type) is ``unsupported``.

The ``raw`` contender (:func:`_raw`) does the same with the store's own client (``bench.stores``):
one upload and one download of one object, the bytes compared.

A worker of a concurrency group (spec field ``ready_file``; see ``bench.sweeps``) is the same
single-value case with its own seed and map_index; once its payload is built it creates the
ready file and blocks on a line from stdin, which the orchestrator writes to every worker of the
group at once: the common start. It reports when it read that line and when its pull ended
(``started_at`` / ``finished_at``, ``time.time()``), so the orchestrator can measure from the
common start to the last finish.
"""

from __future__ import annotations

import gc
import json
import os
import re
import sys
import time
import traceback
from typing import Any

MB = 1024 * 1024


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    return int(match.group(1)) if match else 0


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def hwm_mb() -> float:
    return _status_kb("VmHWM") / 1024


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _first_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 600 else text[:600] + " ..."


class Outcome(Exception):
    def __init__(self, status: str, error: str, tb: str = "") -> None:
        super().__init__(error)
        self.status, self.error, self.tb = status, error, tb


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from bench import contenders, payloads

    case, store = spec["case"], spec["store"]
    kind = case["kind"]
    result: dict[str, Any] = {
        "case": case["name"],
        "kind": kind,
        "store": store["kind"],
        "contender": spec["contender"],
        "status": "ok",
        "error": None,
        "pid": os.getpid(),
    }
    if kind == "s3raw":
        result.update(_s3_raw(case, store))
        return result
    gate = _gate(spec.get("ready_file"))
    if spec["contender"] == "raw":
        try:
            result.update(_raw(case, store, spec.get("raw_bytes"), payloads, gate))
        except Outcome as out:
            result.update(status=out.status, error=out.error, push_s=None, pull_s=None, total_s=None)
            if out.tb:
                result["traceback"] = out.tb[-4000:]
        return result

    t0 = time.perf_counter()
    contender = contenders.make(spec["contender"], store)
    result["import_s"] = round(time.perf_counter() - t0, 3)
    result["batch_pull"] = getattr(contender, "batch_helper", None) is not None

    # Warm-up: same kind of value, another dag_id (not counted in stored bytes); the workers of
    # a concurrency group each under their own map_index.
    map_index = case.get("map_index", -1)
    t0 = time.perf_counter()
    try:
        if kind in ("frame", "fanin", "concurrency"):
            warm = payloads.make_frame(2000, seed=1)
        elif kind == "array":
            warm = payloads.make_array(0.2, seed=1)
        else:
            warm = payloads.make_small(0)
        contender.pull(contender.push(warm, "warmup", map_index, dag_id="warmup"))
        result["warmup_error"] = None
    except Exception as exc:  # the measured push reports the real problem
        result["warmup_error"] = _first_line(exc)
    result["warmup_s"] = round(time.perf_counter() - t0, 3)
    del warm
    result["rss_start_mb"] = round(rss_mb(), 1)

    try:
        if kind in ("frame", "array", "concurrency"):
            measured = _single(contender, case, payloads, gate)
        elif kind == "small":
            measured = _small(contender, case, payloads)
        elif kind == "fanin":
            measured = _fanin(contender, case, payloads)
        else:
            raise ValueError(f"unknown case kind {kind!r}")
        result.update(measured)
    except Outcome as out:
        result.update(status=out.status, error=out.error)
        if out.tb:
            result["traceback"] = out.tb[-4000:]
        for k in ("push_s", "pull_s", "total_s"):
            result[k] = None

    # Stored bytes (objects under <store>/bench/ + row_bytes) are added by the orchestrator,
    # which lists the store after this process exits (see bench.run.Runner.measure_store).
    return result


def _guard(step: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except TypeError as exc:
        if step == "push":
            raise Outcome("unsupported", _first_line(exc)) from None
        raise Outcome("ERROR", f"{step}: {_first_line(exc)}", traceback.format_exc()) from None
    except Exception as exc:
        raise Outcome("ERROR", f"{step}: {_first_line(exc)}", traceback.format_exc()) from None


def _verify(expected: Any, got: Any, payloads: Any) -> None:
    try:
        payloads.check_equal(expected, got)
    except AssertionError as exc:
        raise Outcome("FAILED", f"wrong value pulled back: {str(exc)[:600]}") from None


def _gate(ready_file: str | None) -> Any:
    """The common start of a concurrency group: a callable that returns ``time.time()`` once the
    group may start (at once when this process is not part of a group, else after creating
    ``ready_file`` and reading one line from stdin), and whether it waited."""

    def open_gate() -> tuple[float, bool]:
        if not ready_file:
            return time.time(), False
        with open(ready_file, "w") as f:
            f.write(str(os.getpid()))
        sys.stdin.buffer.readline()
        return time.time(), True

    return open_gate


def _is_frame(case: dict[str, Any]) -> bool:
    return case["kind"] in ("frame", "concurrency")


def _build(case: dict[str, Any], payloads: Any) -> Any:
    if _is_frame(case):
        return payloads.make_frame(case["rows"], seed=case.get("seed", payloads.SEED))
    return payloads.make_array(case["mib"])


def _single(contender: Any, case: dict[str, Any], payloads: Any, gate: Any) -> dict[str, Any]:
    value = _build(case, payloads)
    payload_bytes = payloads.nbytes(value)
    reset_peak()
    rss_payload = rss_mb()

    started_at, gated = gate()
    t0 = time.perf_counter()
    row = _guard("push", contender.push, value, "producer", case.get("map_index", -1))
    push_s = time.perf_counter() - t0
    peak_push = hwm_mb()

    del value
    if not gated:  # a group's wall time runs on: no gc.collect() between push and pull
        reset_peak()
    rss_before_pull = rss_mb()
    t0 = time.perf_counter()
    got = _guard("pull", contender.pull, row)
    pull_s = time.perf_counter() - t0
    finished_at = time.time()
    peak_pull = hwm_mb()

    t0 = time.perf_counter()
    _verify(_build(case, payloads), got, payloads)
    out = _measures(
        push_s, pull_s, payload_bytes, rss_payload, rss_before_pull, peak_push, peak_pull,
        row_bytes=len(row.encode()), items=1, verify_s=time.perf_counter() - t0,
    )
    if gated:
        out.update(started_at=started_at, finished_at=finished_at)
    return out


def _small(contender: Any, case: dict[str, Any], payloads: Any) -> dict[str, Any]:
    n = case["count"]
    values = [payloads.make_small(i) for i in range(n)]
    payload_bytes = sum(payloads.nbytes(v) for v in values)
    reset_peak()
    rss_payload = rss_mb()

    push = contender.push
    t0 = time.perf_counter()
    rows = _guard("push", lambda: [push(v, "producer", i) for i, v in enumerate(values)])
    push_s = time.perf_counter() - t0
    peak_push = hwm_mb()

    del values
    reset_peak()
    rss_before_pull = rss_mb()
    pull = contender.pull
    t0 = time.perf_counter()
    got = _guard("pull", lambda: [pull(r) for r in rows])
    pull_s = time.perf_counter() - t0
    peak_pull = hwm_mb()

    t0 = time.perf_counter()
    _verify(n, len(got), payloads)
    for i, value in enumerate(got):
        _verify(payloads.make_small(i), value, payloads)
    return _measures(
        push_s, pull_s, payload_bytes, rss_payload, rss_before_pull, peak_push, peak_pull,
        row_bytes=sum(len(r.encode()) for r in rows), items=n, verify_s=time.perf_counter() - t0,
    )


def _fanin(contender: Any, case: dict[str, Any], payloads: Any) -> dict[str, Any]:
    """Push ``count`` ~1 MB frames with map_index 0..count-1 (each built, pushed, dropped, as
    by separate mapped tasks), then pull all of them into one list (the fan-in task)."""
    n, item_mib, item_rows = case["count"], case["item_mib"], case.get("item_rows")
    reset_peak()
    rss_payload = rss_mb()
    rows: list[str] = []
    push_s = 0.0
    payload_bytes = 0
    push = contender.push
    for i in range(n):
        item = payloads.make_fanin_item(i, item_mib, item_rows)
        payload_bytes += payloads.nbytes(item)
        t0 = time.perf_counter()
        rows.append(_guard("push", push, item, "mapped", i))
        push_s += time.perf_counter() - t0
        del item
    peak_push = hwm_mb()

    reset_peak()
    rss_before_pull = rss_mb()
    t0 = time.perf_counter()
    got = _guard("pull", contender.pull_many, rows)
    pull_s = time.perf_counter() - t0
    peak_pull = hwm_mb()

    t0 = time.perf_counter()
    _verify(n, len(got), payloads)
    for i, value in enumerate(got):
        _verify(payloads.make_fanin_item(i, item_mib, item_rows), value, payloads)
    return _measures(
        push_s, pull_s, payload_bytes, rss_payload, rss_before_pull, peak_push, peak_pull,
        row_bytes=sum(len(r.encode()) for r in rows), items=n, verify_s=time.perf_counter() - t0,
    )


def _measures(
    push_s: float,
    pull_s: float,
    payload_bytes: int,
    rss_payload: float,
    rss_before_pull: float,
    peak_push: float,
    peak_pull: float,
    *,
    row_bytes: int,
    items: int,
    verify_s: float,
) -> dict[str, Any]:
    peak = max(peak_push, peak_pull)
    return {
        "push_s": round(push_s, 4),
        "pull_s": round(pull_s, 4),
        "total_s": round(push_s + pull_s, 4),
        "items": items,
        "payload_bytes": payload_bytes,
        "row_bytes": row_bytes,
        "rss_payload_mb": round(rss_payload, 1),
        "rss_before_pull_mb": round(rss_before_pull, 1),
        "peak_rss_push_mb": round(peak_push, 1),
        "peak_rss_pull_mb": round(peak_pull, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_over_payload": round(peak * MB / payload_bytes, 2) if payload_bytes else None,
        "verify_s": round(verify_s, 3),
    }


def _raw_bytes(case: dict[str, Any], size: int | None, payloads: Any) -> tuple[bytes, str]:
    """The bytes the raw contender moves: random bytes of ``size`` (the size of the object
    xcomstash stored for this case on this store, measured in the same run), else the value's
    plain encoding (Arrow IPC stream / .npy). Random bytes: no store here compresses, and
    xcomstash's object is compressed already."""
    import io

    import numpy as np

    if size:
        return np.random.default_rng(case.get("seed", 11)).bytes(size), "random bytes, as many as xcomstash stored"
    value = _build(case, payloads)
    buf = io.BytesIO()
    if _is_frame(case):
        from bench.contenders import _write_ipc

        _write_ipc(value, buf)
        return buf.getvalue(), "the DataFrame's Arrow IPC stream (no xcomstash result to size it)"
    np.save(buf, value)
    return buf.getvalue(), "the array's .npy bytes (no xcomstash result to size it)"


def _raw(
    case: dict[str, Any], store: dict[str, Any], size: int | None, payloads: Any, gate: Any
) -> dict[str, Any]:
    """One upload and one download of one object through the store's own client (see
    ``bench.stores``), after a small warm-up object; the downloaded bytes must be identical."""
    from bench import contenders, stores

    t0 = time.perf_counter()
    client = stores.raw_client(store)
    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    # The workers of a concurrency group each use keys of their own.
    suffix = f"-{case['map_index']}" if "map_index" in case else ""
    warm = b"w" * (256 * 1024)
    client.put(f"warmup/raw{suffix}.bin", warm)
    if bytes(client.get(f"warmup/raw{suffix}.bin", len(warm))) != warm:
        raise RuntimeError("warm-up object came back different")
    warmup_s = time.perf_counter() - t0
    rss_start = rss_mb()
    data, source = _raw_bytes(case, size, payloads)
    key = f"{contenders.DAG_ID}/raw/object{suffix}.bin"
    reset_peak()
    rss_payload = rss_mb()

    started_at, gated = gate()
    t0 = time.perf_counter()
    _guard("push", client.put, key, data)
    push_s = time.perf_counter() - t0
    peak_push = hwm_mb()

    if not gated:  # a group's wall time runs on: no gc.collect() between upload and download
        reset_peak()
    rss_before_pull = rss_mb()
    t0 = time.perf_counter()
    got = _guard("pull", client.get, key, len(data))
    pull_s = time.perf_counter() - t0
    finished_at = time.time()
    peak_pull = hwm_mb()

    t0 = time.perf_counter()
    if len(got) != len(data) or memoryview(got) != memoryview(data):
        raise Outcome("FAILED", f"downloaded {len(got)} bytes differ from the {len(data)} uploaded")
    out = _measures(
        push_s, pull_s, len(data), rss_payload, rss_before_pull, peak_push, peak_pull,
        row_bytes=0, items=1, verify_s=time.perf_counter() - t0,
    )
    out.update(import_s=round(import_s, 3), warmup_s=round(warmup_s, 3), rss_start_mb=round(rss_start, 1),
               raw_source=source, raw_how=client.how)
    if gated:
        out.update(started_at=started_at, finished_at=finished_at)
    client.close()
    return out


def _s3_raw(case: dict[str, Any], store: dict[str, Any], rounds: int = 2) -> dict[str, Any]:
    """boto3 managed transfer (upload_fileobj / download_fileobj, boto3's default 8 MiB parts
    and 10 threads) of one object of random bytes; ``rounds`` times, the best round reported."""
    import io

    import numpy as np
    from boto3.s3.transfer import TransferConfig

    from bench import contenders, stores

    client = stores.s3_client(store)
    config = TransferConfig()
    size = int(case["mib"] * MB)
    data = np.random.default_rng(7).integers(0, 256, size, dtype=np.uint8).tobytes()
    key = f"{store['prefix']}/{contenders.DAG_ID}/raw.bin"
    client.put_object(Bucket=store["bucket"], Key=f"{store['prefix']}/warmup.bin", Body=b"x" * 1024)
    ups, downs = [], []
    ok = True
    for _ in range(rounds):
        t0 = time.perf_counter()
        client.upload_fileobj(io.BytesIO(data), store["bucket"], key, Config=config)
        ups.append(time.perf_counter() - t0)
        buf = io.BytesIO()
        t0 = time.perf_counter()
        client.download_fileobj(store["bucket"], key, buf, Config=config)
        downs.append(time.perf_counter() - t0)
        ok = ok and buf.getbuffer() == memoryview(data)
        del buf
    push_s, pull_s = min(ups), min(downs)
    head = client.head_object(Bucket=store["bucket"], Key=key)
    out: dict[str, Any] = {
        "payload_bytes": size,
        "stored_bytes": head["ContentLength"],
        "rounds": rounds,
        "upload_s_all": [round(t, 3) for t in ups],
        "download_s_all": [round(t, 3) for t in downs],
        "push_s": round(push_s, 4),
        "pull_s": round(pull_s, 4),
        "total_s": round(push_s + pull_s, 4),
        "upload_mb_s": round(size / MB / push_s, 1),
        "download_mb_s": round(size / MB / pull_s, 1),
        "peak_rss_mb": round(hwm_mb(), 1),
    }
    if not ok:
        out.update(status="FAILED", error="downloaded bytes differ", push_s=None, pull_s=None, total_s=None)
    return out


def main(argv: list[str]) -> int:
    # Keep stdout for the one result line; everything else (logging, warnings) goes to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    spec = json.loads(argv[1])
    from bench.contenders import child_env

    # Before anything imports airflow. The orchestrator already put these (and any
    # AIRFLOW__XCOMSTASH__* overrides) in our environment; this fills them in for a manual run.
    for name, value in child_env(spec).items():
        os.environ.setdefault(name, value)
    os.makedirs(spec["airflow_home"], exist_ok=True)
    if spec["store"]["kind"] == "local":
        os.makedirs(spec["store"]["root"], exist_ok=True)
    try:
        result = run(spec)
    except BaseException as exc:  # noqa: BLE001 - report, whatever it is
        result = {
            "case": spec["case"]["name"],
            "store": spec["store"]["kind"],
            "contender": spec["contender"],
            "status": "ERROR",
            "error": _first_line(exc),
            "traceback": traceback.format_exc()[-4000:],
        }
    out.write(json.dumps(result) + "\n")
    out.flush()
    sys.stderr.flush()
    # Skip interpreter teardown (Airflow's atexit hooks cost ~0.7 s): nothing left to measure.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
