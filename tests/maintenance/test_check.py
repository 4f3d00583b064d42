"""``xcomstash check``: the checks on real stores (local directories, a real SeaweedFS S3
server, a port nothing listens on, real TLS servers), and one real CLI run under an Airflow
configuration."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import ssl
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from xcomstash import StashConfig
from xcomstash.errors import ProbeError
from xcomstash.format.keyspace import PROBE_PREFIX
from xcomstash.maintenance.check import (
    CheckResult,
    KeysetSettings,
    check_endpoint_tls,
    database_clock_check,
    probe,
    run_checks,
)
from xcomstash.security.crypto.keyset import Keyset, write_keyset_file
from xcomstash.stores import FaultyStore, LocalStore
from tests.harness.servers import S3Server, free_port, s3_client, start_seaweedfs


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    names = [r.name for r in results]
    assert len(names) == len(set(names)), names
    return {r.name: r for r in results}


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def keyset_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "keyset.json"
    path.parent.mkdir()
    write_keyset_file(path, Keyset.generate())
    return path


# ------------------------------------------------------------------------------ local stores


def test_local_store_passes_and_the_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    root = tmp_path / "store"
    results = run_checks(StashConfig(store_url=f"file://{root}"))
    assert [r.status for r in results] == ["ok", "ok"], results
    checks = by_name(results)
    assert checks["config"].detail == "store_url: 1 location"
    assert "wrote, read back and deleted a probe object" in checks[f"store file://{root}"].detail
    # No TLS or clock line for a directory on this machine, and nothing left in it.
    assert files_under(root) == []


def test_unwritable_store_directory_fails_with_a_fix_naming_the_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's parent should be")
    root = blocker / "store"
    results = run_checks(StashConfig(store_url=f"file://{root}"))
    line = by_name(results)[f"store file://{root}"]
    assert line.status == "fail"
    assert f"file://{root}: write of the probe object failed" in line.detail and "StoreError" in line.detail
    assert f"mkdir -p {root}" in line.fix
    assert blocker.read_text().startswith("a file")  # untouched


def test_probe_deletes_its_object_when_the_read_back_fails(tmp_path: Path) -> None:
    inner = LocalStore(tmp_path / "store")
    with pytest.raises(ProbeError) as failed:
        probe(FaultyStore(inner, fail_reads=True))
    assert failed.value.step == "read back" and failed.value.location == inner.root_uri
    assert "StoreReadError" in str(failed.value)
    assert list(inner.list()) == [] and files_under(inner.root) == []


def test_probe_reports_bytes_that_differ_and_still_deletes(tmp_path: Path) -> None:
    inner = LocalStore(tmp_path / "store")
    with pytest.raises(ProbeError, match="differ from the 4096 written"):
        probe(FaultyStore(inner, corrupt_reads=True))
    assert list(inner.list()) == []


def test_reconcile_and_stats_skip_a_probe_object_left_by_a_killed_check(tmp_path: Path) -> None:
    from xcomstash.maintenance.reconcile import ReconcileOptions, Reconciler
    from xcomstash.maintenance.stats import location_usage
    from xcomstash.stores import ReplicatedStore

    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    for store in (a, b):
        with store.writer(f"{PROBE_PREFIX}host-1-abc.probe") as pending:
            pending.write(b"x" * 10)
        os.utime(store.root / f"{PROBE_PREFIX}host-1-abc.probe", (1, 1))  # long past any grace period
    report = Reconciler(a, ReconcileOptions(grace_seconds=60)).run([], lambda: [])
    assert report.foreign.count == 0 and report.orphans.count == 0
    assert (a.root / f"{PROBE_PREFIX}host-1-abc.probe").exists()  # not ours to collect either
    usage = location_usage(ReplicatedStore([a, b]))
    assert usage == {a.root_uri: {"objects": 0, "bytes": 0}, b.root_uri: {"objects": 0, "bytes": 0}}


# ------------------------------------------------------------------------------------ keys


def keys_only(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results if r.name.startswith("keyset")}


def test_keyset_file_that_is_private_and_parses_is_ok(tmp_path: Path, keyset_file: Path) -> None:
    results = run_checks(
        StashConfig(store_url=f"file://{tmp_path / 'store'}"), keysets=KeysetSettings(spec=f"file:{keyset_file}")
    )
    checks = keys_only(results)
    assert checks["keyset *"].status == "ok" and "1 key, primary k" in checks["keyset *"].detail
    assert checks["keyset coverage"].status == "ok"


def test_missing_keyset_fails_with_how_to_provide_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "keyset.json"
    checks = keys_only(run_checks(
        StashConfig(store_url=f"file://{tmp_path / 'store'}"),
        keysets=KeysetSettings(spec=f"file:{missing}; team_b_*=env:XCS_CHECK_UNSET_{uuid.uuid4().hex}"),
    ))
    assert checks["keyset *"].status == "fail"
    assert checks["keyset *"].detail == f"keyset file {missing} does not exist"
    assert f"xcomstash keys generate {missing}" in checks["keyset *"].fix
    assert checks["keyset team_b_*"].status == "fail" and "environment variable is not set" in checks["keyset team_b_*"].detail


def test_world_readable_keyset_fails_and_group_readable_warns(tmp_path: Path, keyset_file: Path) -> None:
    settings = KeysetSettings(spec=f"file:{keyset_file}")
    config = StashConfig(store_url=f"file://{tmp_path / 'store'}")
    keyset_file.chmod(0o644)
    line = keys_only(run_checks(config, keysets=settings))["keyset *"]
    assert line.status == "fail" and "readable by other users (mode 0644)" in line.detail
    assert line.fix == f"chmod 600 {keyset_file}"
    keyset_file.chmod(0o640)
    line = keys_only(run_checks(config, keysets=settings))["keyset *"]
    assert line.status == "warn" and "readable by its group (mode 0640)" in line.detail


def test_keyset_patterns_must_cover_the_dag_policies_patterns(tmp_path: Path, keyset_file: Path) -> None:
    config = StashConfig(store_url=f"file://{tmp_path / 'store'}")
    uncovered = keys_only(run_checks(config, keysets=KeysetSettings(
        spec=f"team_a_*=file:{keyset_file}", dag_patterns=("team_a_etl_*", "pii_*")
    )))["keyset coverage"]
    assert uncovered.status == "fail" and "'pii_*'" in uncovered.detail and "'team_a_etl_*'" not in uncovered.detail
    assert "pii_*=file:" in uncovered.fix
    no_catch_all = keys_only(run_checks(config, keysets=KeysetSettings(
        spec=f"team_a_*=file:{keyset_file}", dag_patterns=("team_a_etl_*",)
    )))["keyset coverage"]
    assert no_catch_all.status == "warn" and "'*=file:" in no_catch_all.fix
    shadowed = keys_only(run_checks(config, keysets=KeysetSettings(
        spec=f"*=file:{keyset_file}; pii_*=file:{keyset_file}", dag_patterns=("pii_*",)
    )))["keyset coverage"]
    assert shadowed.status == "warn" and "'pii_*' comes after '*'" in shadowed.detail


def test_without_keysets_a_local_store_uses_the_single_machine_keyset(tmp_path: Path, keyset_file: Path) -> None:
    config = StashConfig(store_url=f"file://{tmp_path / 'store'}")
    fresh = keys_only(run_checks(config, keysets=KeysetSettings(default_path=str(tmp_path / "absent.json"))))
    assert fresh["keyset"].status == "ok" and "created on first use" in fresh["keyset"].detail
    keyset_file.chmod(0o604)
    exposed = keys_only(run_checks(config, keysets=KeysetSettings(default_path=str(keyset_file))))
    assert exposed["keyset"].status == "fail" and exposed["keyset"].fix == f"chmod 600 {keyset_file}"


# ----------------------------------------------------------------------------------- clocks


def test_database_clock_offsets_warn_then_fail_and_an_unreachable_database_warns() -> None:
    assert database_clock_check(time.time).status == "ok"
    assert database_clock_check(lambda: time.time() - 60).status == "warn"
    late = database_clock_check(lambda: time.time() + 3600)
    assert late.status == "fail" and "ahead of this host's" in late.detail and "NTP" in late.fix

    def unreachable() -> float:
        raise ConnectionRefusedError("connection to 127.0.0.1:1 refused")

    down = database_clock_check(unreachable)
    assert down.status == "warn" and "not reachable" in down.detail and "ConnectionRefusedError" in down.detail


# ------------------------------------------------------------------------------------- TLS


def tls_server(tmp_path: Path, not_after: dt.datetime) -> Iterator[int]:
    """A real TLS server on 127.0.0.1 presenting a self-signed certificate valid until
    ``not_after``; completes handshakes until the test ends."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - dt.timedelta(days=365)).not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{uuid.uuid4().hex}.pem", tmp_path / f"{uuid.uuid4().hex}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_tls_certificate_expiry_ok_soon_and_past(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    expected = {200: "ok", 5: "warn", -3: "fail"}
    for days, status in expected.items():
        server = tls_server(tmp_path, now + dt.timedelta(days=days))
        port = next(server)
        try:
            line = check_endpoint_tls("tls s3://x", f"https://127.0.0.1:{port}")
        finally:
            server.close()
        assert line.status == status, (days, line)
        assert f"https://127.0.0.1:{port}" in line.detail
        if status != "ok":
            assert "renew the certificate of 127.0.0.1" in line.fix


def test_plain_http_is_a_warning_on_loopback_and_a_failure_to_another_host() -> None:
    assert check_endpoint_tls("tls", "http://127.0.0.1:8333").status == "warn"
    remote = check_endpoint_tls("tls", "http://s3.example.com:8333")
    assert remote.status == "fail" and "unencrypted" in remote.detail and "https://" in remote.fix


# -------------------------------------------------------------------------- real S3 server


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs-check"))
    try:
        yield server
    finally:
        server.stop()


def bucket_keys(server: S3Server, prefix: str) -> list[str]:
    listed = server.client().list_objects_v2(Bucket=server.bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


@pytest.mark.s3
def test_s3_store_probe_clock_and_tls_against_seaweedfs(s3: S3Server) -> None:
    prefix = f"t-{uuid.uuid4().hex[:10]}"
    url = f"s3://{s3.bucket}/{prefix}"
    client = s3.client()
    checks = by_name(run_checks(StashConfig(store_url=url), clients=lambda location: client))
    assert checks[f"store {url}"].status == "ok", checks
    assert checks[f"clock {url}"].status == "ok" and "the store's clock is" in checks[f"clock {url}"].detail
    tls = checks[f"tls {url}"]
    assert tls.status == "warn" and f"{s3.endpoint_url}: plain (no TLS) to this machine" in tls.detail
    assert bucket_keys(s3, prefix) == []
    # This host's clock ten minutes fast: the store's clock is ten minutes behind it.
    skewed = by_name(run_checks(StashConfig(store_url=url), clients=lambda location: client, now=lambda: time.time() + 600))
    assert skewed[f"clock {url}"].status == "fail" and "behind this host's" in skewed[f"clock {url}"].detail
    assert "NTP" in skewed[f"clock {url}"].fix


@pytest.mark.s3
def test_replicated_store_with_one_location_down_fails_that_location_only(s3: S3Server, tmp_path: Path) -> None:
    prefix = f"t-{uuid.uuid4().hex[:10]}"
    live = s3.client()
    dead = s3_client(
        f"http://127.0.0.1:{free_port()}", s3.access_key, s3.secret_key,
        connect_timeout=1, read_timeout=1, retries={"max_attempts": 1},
    )
    up, down = f"s3://{s3.bucket}/{prefix}", f"s3://down@{s3.bucket}/{prefix}-down"
    local = f"file://{tmp_path / 'store'}"
    config = StashConfig(store_url=f"{local} {up} {down}", write_quorum=2)
    started = time.perf_counter()
    results = run_checks(config, clients=lambda location: dead if location.conn_id == "down" else live)
    assert time.perf_counter() - started < 30
    failed = [r for r in results if r.status == "fail"]
    assert [r.name for r in failed] == [f"store {down}"], results
    assert "store_url location 3 of 3" in failed[0].detail and f"s3://{s3.bucket}/{prefix}-down" in failed[0].detail
    assert "write of the probe object failed" in failed[0].detail and "reaches the service" in failed[0].fix
    checks = by_name(results)
    assert checks["config"].detail == "store_url: 3 locations, write_quorum 2"
    assert checks[f"store {local}"].status == "ok" and checks[f"store {up}"].status == "ok"
    assert checks[f"clock {up}"].status == "ok"
    assert checks[f"clock {down}"].status == "warn"  # cannot ask a server that is down for its time
    assert bucket_keys(s3, prefix) == [] and files_under(tmp_path / "store") == []


@pytest.mark.s3
def test_shared_store_without_keysets_fails_unless_signing_is_switched_off(s3: S3Server) -> None:
    url = f"s3://{s3.bucket}/t-{uuid.uuid4().hex[:10]}"
    client = s3.client()
    line = keys_only(run_checks(StashConfig(store_url=url), clients=lambda loc: client, keysets=KeysetSettings()))["keyset"]
    assert line.status == "fail" and "shared between machines" in line.detail and "xcomstash keys generate" in line.fix
    line = keys_only(run_checks(
        StashConfig(store_url=url), clients=lambda loc: client, keysets=KeysetSettings(sign_references=False)
    ))["keyset"]
    assert line.status == "warn" and "sign_references = false" in line.detail


# --------------------------------------------------------------------- the CLI under Airflow


@pytest.fixture(scope="module")
def airflow_env(make_airflow_env):
    """One Airflow installation (home, migrated SQLite database, no scheduler) for this module."""
    return make_airflow_env("check")


@pytest.mark.airflow
@pytest.mark.s3
def test_cli_check_json_under_airflow_config(airflow_env, s3: S3Server, tmp_path: Path) -> None:
    """One real ``xcomstash check --json`` in a subprocess with an Airflow home: a replicated
    store (local directory + SeaweedFS through an Airflow connection), a per-DAG store, keysets
    that miss a dag_policies pattern, one of them world-readable, and the metadata database."""
    env = airflow_env
    prefix = f"t-{uuid.uuid4().hex[:10]}"
    team = tmp_path / "team.json"
    write_keyset_file(team, Keyset.generate())
    exposed = tmp_path / "exposed.json"
    write_keyset_file(exposed, Keyset.generate())
    exposed.chmod(0o644)
    s3_url = f"s3://xcs_check_s3@{s3.bucket}/{prefix}"
    pii = tmp_path / "pii-store"
    result = env.xcomstash("check", "--json", env={
        "AIRFLOW_CONN_XCS_CHECK_S3": s3.connection_json(),
        "AIRFLOW__XCOMSTASH__STORE_URL": f"file://{env.store} {s3_url}",
        "AIRFLOW__XCOMSTASH__WRITE_QUORUM": "1",
        "AIRFLOW__XCOMSTASH__DAG_POLICIES": json.dumps([{"dags": "pii_*", "store_url": f"file://{pii}"}]),
        "AIRFLOW__XCOMSTASH__KEYSETS": f"team_*=file:{team}; ops_*=file:{exposed}",
    })
    assert result.returncode == 2, result.describe()
    document = json.loads(result.stdout)
    checks = {c["name"]: c for c in document["checks"]}
    status = {name: c["status"] for name, c in checks.items()}
    assert status["config"] == "ok" and "per-DAG stores for 'pii_*'" in checks["config"]["detail"]
    assert status[f"store file://{env.store}"] == "ok"
    assert status[f"store {s3_url}"] == "ok" and status[f"clock {s3_url}"] == "ok"
    assert status[f"store file://{pii}"] == "ok"
    assert status["keyset team_*"] == "ok"
    assert status["keyset ops_*"] == "fail" and checks["keyset ops_*"]["fix"] == f"chmod 600 {exposed}"
    assert status["keyset coverage"] == "fail" and "'pii_*'" in checks["keyset coverage"]["detail"]
    assert status["clock database"] == "ok", checks["clock database"]
    assert status[f"cache {env.cache_dir}"] in ("ok", "warn")  # warn: less free space than cache_max_bytes
    assert document["fail"] == 2 and document["summary"].startswith("check: ")
    assert bucket_keys(s3, prefix) == [] and files_under(env.store) == [] and files_under(pii) == []


def test_a_store_that_cannot_be_opened_fails_with_the_url_to_check(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    url = "abfs://xcom/prefix"
    results = run_checks(StashConfig(store_url=f"file://{tmp_path / 'store'} {url}"))
    line = by_name(results)[f"store {url}"]
    assert line.status == "fail" and "cannot open the store: ConfigError" in line.detail
    assert "store_url location 2 of 2" in line.detail and f"check the URL {url}" in line.fix
    assert by_name(results)[f"store file://{tmp_path / 'store'}"].status == "ok"


def test_read_cache_must_be_writable_and_have_room(tmp_path: Path) -> None:
    from xcomstash.maintenance.check import cache_check

    cache = tmp_path / "cache"
    fresh = cache_check(str(cache / "xcs"), 1024)
    assert fresh.status == "ok" and "created on first use" in fresh.detail and not cache.exists()
    cache.mkdir()
    assert cache_check(str(cache), 1024).status == "ok" and os.listdir(cache) == []
    huge = cache_check(str(cache), 1 << 60)
    assert huge.status == "warn" and "less than cache_max_bytes" in huge.detail
    blocker = tmp_path / "file"
    blocker.write_text("x")
    broken = cache_check(str(blocker), 1024)
    assert broken.status == "fail" and f"set [xcomstash] cache_dir" in broken.fix


ADAPTER_CHILD = """
import json, os, sys
from xcomstash.airflow.preflight import checks_here, database_time
out = {}
missing = sys.argv[1]
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = "sqlite:///" + missing
try:
    database_time()
except FileNotFoundError as exc:
    out["database"] = str(exc)
out["created"] = os.path.exists(missing)
os.environ["AIRFLOW__XCOMSTASH__THRESHOLD"] = "a lot"
out["broken"] = [r.__dict__ for r in checks_here()]
print(json.dumps(out))
"""


@pytest.mark.airflow
def test_adapter_reports_an_unparsable_config_as_one_line_and_creates_no_database(airflow_env, tmp_path: Path) -> None:
    env = airflow_env
    missing = tmp_path / "worker" / "airflow.db"
    result = env.python(ADAPTER_CHILD, str(missing))
    assert result.returncode == 0, result.describe()
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["database"] == f"the SQLite database {missing} does not exist on this host" and out["created"] is False
    [broken] = out["broken"]
    assert broken["name"] == "config" and broken["status"] == "fail"
    assert "threshold" in broken["detail"] and "AIRFLOW__XCOMSTASH__" in broken["fix"]


def test_a_location_that_does_not_answer_fails_after_the_timeout(tmp_path: Path) -> None:
    """A TCP server that accepts and never answers (a hung gateway): the S3 client waits
    longer than the check's bound, so the check gives up on it and reports it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.listen(8)
    try:
        silent = s3_client(
            f"http://127.0.0.1:{listener.getsockname()[1]}", "k", "s", read_timeout=20, retries={"max_attempts": 1}
        )
        url = "s3://xcom/hung"
        started = time.perf_counter()
        results = run_checks(
            StashConfig(store_url=f"file://{tmp_path / 'store'} {url}"), clients=lambda loc: silent, location_timeout=1.0
        )
        assert time.perf_counter() - started < 10
    finally:
        listener.close()
    checks = by_name(results)
    assert checks[f"store {url}"].status == "fail" and "no answer within 1 s" in checks[f"store {url}"].detail
    assert checks[f"store file://{tmp_path / 'store'}"].status == "ok"
