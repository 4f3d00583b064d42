"""Metrics through Airflow's own Stats, in a real run: a UDP socket bound here is the statsd
server of one ``airflow dags test`` of xcs_metrics (statsd on, InfluxDB-style tags so that the
packets carry dag_id and task_id), and what arrives is checked by name, type and value.

One Airflow process for the module; the packets are parsed once and every test reads them."""

from __future__ import annotations

import re
import socket
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pytest

from tests.airflow.dagfiles import dag_values_module

pytestmark = pytest.mark.airflow

DAG_ID = "xcs_metrics"
PREFIX = "airflow"
#: ``name[,tag=value...]:value|type`` (one line of a statsd packet).
_LINE = re.compile(r"^(?P<name>[^,:]+)(?P<tags>(?:,[^,=:]+=[^,:]*)*):(?P<value>-?[0-9.eE+-]+)\|(?P<type>c|g|ms)")


@dataclass(frozen=True)
class Packet:
    name: str
    tags: tuple[tuple[str, str], ...]
    value: float
    type: str

    @property
    def task_id(self) -> str | None:
        return dict(self.tags).get("task_id")


class StatsdListener:
    """A UDP socket on 127.0.0.1 read by a thread until :meth:`stop`; every line received."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            self.lines.extend(data.decode(errors="replace").splitlines())

    def stop(self) -> list[str]:
        """Stop the thread, then take what is still queued (the run has ended: nothing more comes)."""
        self._stop.set()
        self._thread.join()
        self.sock.setblocking(False)
        while True:
            try:
                self.lines.extend(self.sock.recv(65536).decode(errors="replace").splitlines())
            except BlockingIOError:
                break
        self.sock.close()
        return self.lines


def parse(lines: list[str]) -> list[Packet]:
    packets = []
    for line in lines:
        m = _LINE.match(line)
        if m is None:
            continue
        tags = tuple(tuple(t.split("=", 1)) for t in m["tags"].split(",")[1:])
        packets.append(Packet(m["name"], tags, float(m["value"]), m["type"]))  # type: ignore[arg-type]
    return packets


@pytest.fixture(scope="module")
def metrics_run(make_airflow_env) -> dict[str, Any]:
    from xcomstash.security.crypto.keyset import Keyset, write_keyset_file

    env = make_airflow_env("metrics", dags=["xcs_metrics.py"])
    keyset = env.root / "keyset.json"
    write_keyset_file(keyset, Keyset.generate())
    env.config.update({
        # Encrypted, and compressed anyway for this DAG: encryption time and a real ratio.
        "AIRFLOW__XCOMSTASH__KEYSETS": f"file:{keyset}",
        "AIRFLOW__XCOMSTASH__ENCRYPT": "True",
        "AIRFLOW__XCOMSTASH__COMPRESS_ENCRYPTED": DAG_ID,
        "AIRFLOW__XCOMSTASH__COMPRESSION": "zstd",  # the local store's default (auto) is none
    })
    listener = StatsdListener()
    try:
        run = env.dags_test(DAG_ID, env=statsd_env(listener.port))
    finally:
        lines = listener.stop()
    run.assert_success()
    return {"env": env, "run": run, **received(lines)}


def statsd_env(port: int) -> dict[str, str]:
    """Airflow's [metrics] pointed at the listener (InfluxDB-style tags: dag_id, task_id)."""
    return {
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(port),
        "AIRFLOW__METRICS__STATSD_PREFIX": PREFIX,
        "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True",
    }


def received(lines: list[str]) -> dict[str, Any]:
    packets = parse(lines)
    by_name: dict[str, list[Packet]] = defaultdict(list)
    for p in packets:
        if p.name.startswith(f"{PREFIX}.xcomstash."):
            by_name[p.name[len(PREFIX) + 1 :]].append(p)
    return {"lines": lines, "packets": packets, "ours": by_name}


def described(run: dict[str, Any]) -> str:
    return "\n".join(sorted({line for line in run["lines"] if "xcomstash" in line})) or "(no xcomstash packets)"


def one(run: dict[str, Any], name: str, task_id: str = "produce") -> list[Packet]:
    found = [p for p in run["ours"].get(name, []) if p.task_id == task_id]
    assert found, f"no {name} for task {task_id}:\n{described(run)}"
    return found


def test_airflow_and_xcomstash_metrics_reach_the_same_statsd_server_under_airflows_prefix(metrics_run) -> None:
    names = {p.name for p in metrics_run["packets"]}
    assert f"{PREFIX}.ti.start" in names  # Airflow's own task metrics, same client
    assert metrics_run["ours"], described(metrics_run)
    # every xcomstash packet is tagged with the DAG, and a task of it
    tasks = {"produce", "consume", "snoop"}
    for packets in metrics_run["ours"].values():
        for p in packets:
            tags = dict(p.tags)
            assert tags.get("dag_id") == DAG_ID and tags.get("task_id") in tasks, p


def test_inline_and_offloaded_pushes_are_counted_per_task(metrics_run) -> None:
    # produce: the small dict inline; the restricted array and the DataFrame offloaded
    assert sum(p.value for p in one(metrics_run, "xcomstash.push.inline")) == 1
    assert sum(p.value for p in one(metrics_run, "xcomstash.push.offloaded")) == 2
    # consume and snoop return short strings: inline, under their own task
    for task_id in ("consume", "snoop"):
        assert sum(p.value for p in one(metrics_run, "xcomstash.push.inline", task_id)) == 1
    assert all(p.type == "c" for n in ("xcomstash.push.inline", "xcomstash.push.offloaded") for p in metrics_run["ours"][n])


def test_push_latency_bytes_ratio_and_encryption_time_have_plausible_values(metrics_run) -> None:
    V = dag_values_module()
    durations = one(metrics_run, "xcomstash.push.duration")
    assert len(durations) == 2 and all(p.type == "ms" and 0 < p.value < 60_000 for p in durations)
    raw = [p.value for p in one(metrics_run, "xcomstash.push.bytes")]
    stored = [p.value for p in one(metrics_run, "xcomstash.push.stored_bytes")]
    # the array: 20,000 float64 = 160,000 bytes of payload (plus the codec's few header bytes)
    assert any(160_000 <= r < 161_000 for r in raw), raw
    # the frame: more payload than its rows of float64 columns alone
    assert any(r > V.BIG_ROWS * 8 * 2 for r in raw), raw
    assert all(s > 0 for s in stored) and len(stored) == 2
    env, run = metrics_run["env"], metrics_run["run"]
    rows = {r.key: r.value for r in env.xcom_rows(DAG_ID, run.run_id, "produce") if r.is_reference}
    # stored bytes are exactly the objects' sizes, as the references say
    assert sorted(stored) == sorted(float(v["size"]) for v in rows.values())
    ratios = one(metrics_run, "xcomstash.push.compression_ratio")
    assert all(p.type == "g" for p in ratios)
    # the arange compresses very well, the mixed frame somewhat; never below 0.9 (framing)
    assert max(p.value for p in ratios) > 2 and min(p.value for p in ratios) > 0.9
    encryption = one(metrics_run, "xcomstash.push.encryption")
    assert len(encryption) == 2 and all(p.type == "ms" and 0 < p.value < 10_000 for p in encryption)


def test_pulls_are_counted_timed_and_sized_under_the_task_that_pushed(metrics_run) -> None:
    # consume pulls the frame (its argument) and the restricted array, and the small dict inline
    assert sum(p.value for p in one(metrics_run, "xcomstash.pull.offloaded")) == 2
    assert sum(p.value for p in one(metrics_run, "xcomstash.pull.inline")) == 1
    pulled = sorted(p.value for p in one(metrics_run, "xcomstash.pull.bytes"))
    pushed = sorted(p.value for p in one(metrics_run, "xcomstash.push.stored_bytes"))
    assert pulled == pushed  # whole reads fetch exactly the stored objects
    assert all(p.type == "ms" and p.value > 0 for p in one(metrics_run, "xcomstash.pull.duration"))
    assert all(p.type == "ms" and p.value > 0 for p in one(metrics_run, "xcomstash.pull.decryption"))


def test_a_denied_read_is_counted_and_no_error_or_integrity_failure_is(metrics_run) -> None:
    denied = one(metrics_run, "xcomstash.pull.denied")
    assert sum(p.value for p in denied) == 1 and denied[0].type == "c"
    names = set(metrics_run["ours"])
    assert not {n for n in names if n.startswith("xcomstash.error.")}, names
    assert "xcomstash.integrity_failure" not in names and "xcomstash.pull.failed" not in names
    # a local directory store has no read cache: no cache metrics at all
    assert not {n for n in names if n.startswith("xcomstash.cache.")}, names


def test_the_xcomstash_command_sends_its_metrics_too_reconcile_counting_what_it_purged(metrics_run) -> None:
    """Runs last: it deletes the restricted value's row, and reconcile collects its object."""
    env, run = metrics_run["env"], metrics_run["run"]
    assert env.execute("DELETE FROM xcom WHERE dag_id = ? AND run_id = ? AND key = ?", (DAG_ID, run.run_id, "restricted")) == 1
    listener = StatsdListener()
    try:
        report = env.xcomstash_json("reconcile", "--grace", "0s", env=statsd_env(listener.port))
    finally:
        got = received(listener.stop())
    assert report["summary"].startswith("reconcile"), report
    purged = got["ours"].get("xcomstash.purge.objects", [])
    assert [(p.value, p.type, dict(p.tags).get("dag_id")) for p in purged] == [(1, "c", DAG_ID)], described(got)


def test_metrics_are_on_only_with_an_airflow_metrics_backend_unless_switched_off(monkeypatch) -> None:
    """Airflow's own configuration object, read in this process (it reads the environment on
    every lookup)."""
    conf = pytest.importorskip("airflow.sdk.configuration").conf
    from xcomstash.airflow.metrics import metrics_enabled, metrics_subscribers

    for name in ("STATSD_ON", "STATSD_DATADOG_ENABLED", "OTEL_ON"):
        monkeypatch.setenv(f"AIRFLOW__METRICS__{name}", "False")
    monkeypatch.delenv("AIRFLOW__XCOMSTASH__METRICS", raising=False)
    assert not metrics_enabled(conf) and metrics_subscribers(conf) == []  # nowhere to send them
    for name in ("STATSD_ON", "STATSD_DATADOG_ENABLED", "OTEL_ON"):
        monkeypatch.setenv(f"AIRFLOW__METRICS__{name}", "True")
        assert metrics_enabled(conf), name
        monkeypatch.setenv(f"AIRFLOW__METRICS__{name}", "False")
    monkeypatch.setenv("AIRFLOW__METRICS__OTEL_ON", "True")
    monkeypatch.setenv("AIRFLOW__XCOMSTASH__METRICS", "False")
    assert not metrics_enabled(conf)


def test_plain_statsd_gets_untagged_names_that_still_tell_operation_route_and_error(monkeypatch) -> None:
    """The sink in this process, through Airflow's own Stats set up from [metrics] (as the
    ``xcomstash`` command sets it up), to a plain statsd server: no tags, so the names must
    carry what matters."""
    conf = pytest.importorskip("airflow.sdk.configuration").conf
    from airflow.sdk.observability import stats

    from xcomstash.airflow.metrics import metrics_subscribers
    from xcomstash.coordinate import XComCoordinate
    from xcomstash.errors import StoreTimeoutError
    from xcomstash.observe.events import Event

    listener = StatsdListener()
    for name, value in {**statsd_env(listener.port), "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "False"}.items():
        monkeypatch.setenv(name, value)
    try:
        (recorder,) = metrics_subscribers(conf, own_process=True)
        coordinate = XComCoordinate("etl", "r1", "extract", -1, "return_value")
        recorder(Event("push", "ok", coordinate, size=400, raw_size=1000, seconds=0.25))
        recorder(Event("push", "failed", coordinate, error=StoreTimeoutError("slow")))
        recorder.count_inline("pull", coordinate)
        recorder.flush()
    finally:
        lines = listener.stop()
        from airflow.sdk._shared.observability.metrics.base_stats_logger import NoStatsLogger

        stats.initialize(factory=NoStatsLogger, export_legacy_names=True)  # leave this process as found
    assert sorted(lines) == sorted([
        f"{PREFIX}.xcomstash.push.offloaded:1|c",
        f"{PREFIX}.xcomstash.push.duration:250.000000|ms",  # statsd writes timers with 6 decimals
        f"{PREFIX}.xcomstash.push.bytes:1000|c",
        f"{PREFIX}.xcomstash.push.stored_bytes:400|c",
        f"{PREFIX}.xcomstash.push.compression_ratio:2.5|g",
        f"{PREFIX}.xcomstash.push.failed:1|c",
        f"{PREFIX}.xcomstash.error.StoreTimeoutError:1|c",
        f"{PREFIX}.xcomstash.pull.inline:1|c",
    ]), lines
