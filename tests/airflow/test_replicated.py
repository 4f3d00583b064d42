"""A replicated store under real ``airflow dags test`` runs: ``store_url`` names a SeaweedFS S3
location and a fake-gcs-server GCS location.

One module fixture plays the story once, in order (each phase's results kept for the tests):

1. ``xcs_replicated`` runs (three producers: DataFrame, array, large dict; a consumer checking
   their digests) at the default write quorum (all).
2. The test damages the copies: the frame's GCS copy deleted, the array's S3 copy corrupted
   (one byte flipped), the dict's S3 copy deleted; then only the consumer runs again (``tasks
   test``, same Airflow process). It must read around the damage (trace: where each value came
   from, which source failed first).
3. ``xcomstash repair`` restores the three copies; a second ``repair`` finds nothing to do.
4. GCS stopped: ``xcs_replicated_push_q1`` with ``write_quorum = 1`` succeeds on S3 alone,
   ``xcs_replicated_push_qall`` at the default quorum fails and leaves nothing behind. GCS
   restarted (same objects): ``repair`` copies the quorum-1 value there.

Airflow processes: two, on a PostgreSQL metadata database (they and the repair commands use
it at the same time). Everything but the write_quorum = 1 run happens in one process at the
default quorum; the write_quorum = 1 run starts in a second process right after the first
run (so its start-up overlaps the rest) and waits at a gate (a file). GCS is stopped, the gate
opened, and both quorum runs push at once: GCS's client retries a refused connection for
``gcs_retry_timeout`` (3 s here) before a push gives up on it, so side by side they wait that
out once.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pytest

from tests.airflow.dagfiles import dag_values_module
from tests.harness.airflow import AirflowEnv, DagRunResult, raised_exceptions
from tests.harness.gcs_server import GCSServer, restart_fake_gcs, start_fake_gcs
from tests.harness.servers import S3Server, start_seaweedfs

pytestmark = pytest.mark.airflow

DAG_ID = "xcs_replicated"
Q1_DAG, QALL_DAG = "xcs_replicated_push_q1", "xcs_replicated_push_qall"
PRODUCERS = ("make_frame", "make_array", "make_dict")
S3_CONN, GCS_CONN = "xcs_s3", "xcs_gcs"
BUCKET = "xcom"
#: How each value's copies are damaged before the consumer runs again: (location, damage).
DAMAGE = {"make_frame": ("gcs", "delete"), "make_array": ("s3", "flip"), "make_dict": ("s3", "delete")}


# --------------------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSServer]:
    """Module-scoped, not shared: the test stops and restarts it (persistent, so it comes back
    with its objects)."""
    server = start_fake_gcs(tmp_path_factory.mktemp("fake-gcs"), persistent=True)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Locations:
    """The two locations of the store, read straight from the servers (no xcomstash code)."""

    s3: S3Server
    gcs: GCSServer
    prefix: str

    @property
    def roots(self) -> dict[str, str]:
        return {"s3": f"s3://{BUCKET}/{self.prefix}", "gcs": f"gs://{BUCKET}/{self.prefix}"}

    def s3_objects(self) -> dict[str, bytes]:
        client = self.s3.client()
        keys = [
            o["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{self.prefix}/")
            for o in page.get("Contents", [])
        ]
        return {k[len(self.prefix) + 1:]: client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}

    def gcs_objects(self) -> dict[str, bytes]:
        client = self.gcs.client()
        return {
            b.name[len(self.prefix) + 1:]: b.download_as_bytes()
            for b in client.list_blobs(BUCKET, prefix=f"{self.prefix}/")
        }

    def objects(self) -> dict[str, dict[str, bytes]]:
        return {"s3": self.s3_objects(), "gcs": self.gcs_objects()}

    def key_of(self, reference: dict[str, Any]) -> str:
        uri, root = reference["uri"], self.roots["s3"]  # references name the first location
        assert uri.startswith(root + "/"), uri
        return uri[len(root) + 1:]

    def delete(self, where: str, key: str) -> None:
        if where == "s3":
            self.s3.client().delete_object(Bucket=BUCKET, Key=f"{self.prefix}/{key}")
        else:
            self.gcs.client().bucket(BUCKET).blob(f"{self.prefix}/{key}").delete()

    def flip(self, where: str, key: str) -> None:
        """One bit of one byte in the middle of the object, written back in place."""
        data = bytearray(self.objects()[where][key])
        data[len(data) // 2] ^= 0x01
        if where == "s3":
            self.s3.client().put_object(Bucket=BUCKET, Key=f"{self.prefix}/{key}", Body=bytes(data))
        else:
            self.gcs.client().bucket(BUCKET).blob(f"{self.prefix}/{key}").upload_from_string(bytes(data))


def configure(env: AirflowEnv, loc: Locations) -> None:
    from xcomstash.security.crypto.keyset import Keyset, write_keyset_file

    keyset = env.root / "keyset.json"
    write_keyset_file(keyset, Keyset.generate())
    s3_conn = json.loads(loc.s3.connection_json())
    # A stopped S3 server would fail fast; keep botocore from retrying for long anyway.
    s3_conn["extra"]["config_kwargs"] = {"retries": {"max_attempts": 2, "mode": "standard"}, "connect_timeout": 2}
    env.config.update({
        "AIRFLOW__XCOMSTASH__STORE_URL": f"s3://{S3_CONN}@{BUCKET}/{loc.prefix} gs://{GCS_CONN}@{BUCKET}/{loc.prefix}",
        # A shared store needs keys every worker holds.
        "AIRFLOW__XCOMSTASH__KEYSETS": f"file:{keyset}",
        # No read cache: a re-run must read the locations, not a local copy.
        "AIRFLOW__XCOMSTASH__CACHE_DIR": "off",
        # Audit events to the task log only: with GCS down, every audit object written to the
        # store would wait out GCS's client retries too.
        "AIRFLOW__XCOMSTASH__AUDIT": "log",
        # A stopped GCS is given up on after 3 s of retries (default 30 s).
        "AIRFLOW__XCOMSTASH__GCS_RETRY_TIMEOUT": "3",
        f"AIRFLOW_CONN_{S3_CONN.upper()}": json.dumps(s3_conn),
        f"AIRFLOW_CONN_{GCS_CONN.upper()}": json.dumps({"conn_type": "google_cloud_platform", "extra": {"project": "test"}}),
        "STORAGE_EMULATOR_HOST": loc.gcs.endpoint,
    })


# ---------------------------------------------------------------------------- the story


@dataclass
class Story:
    env: AirflowEnv
    loc: Locations
    run: DagRunResult
    refs: dict[str, dict[str, Any]]  # producer task id -> its reference (row value)
    after_run: dict[str, dict[str, bytes]]
    rerun: DagRunResult
    rerun_pulls: list[dict[str, Any]]  # trace events of the re-run's pulls
    after_damage: dict[str, dict[str, bytes]]
    repair: dict[str, Any]
    after_repair: dict[str, dict[str, bytes]]
    repair_again: dict[str, Any]
    quorum_one: DagRunResult
    quorum_all: DagRunResult
    gcs_down: dict[str, dict[str, bytes]]  # what S3 held while GCS was down
    repair_after_restart: dict[str, Any]
    after_restart_repair: dict[str, dict[str, bytes]]


def repair(env: AirflowEnv) -> dict[str, Any]:
    """``xcomstash repair --json``, with its exit status."""
    result = env.xcomstash("repair", "--json", "--quiet")
    assert result.returncode in (0, 2), result.describe()
    return {**json.loads(result.stdout), "exit": result.returncode}


class Background:
    """A call running in a thread; :meth:`result` joins it and returns (or raises) its outcome."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._outcome: list[Any] = []
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._outcome.append((True, fn()))
        except BaseException as exc:
            self._outcome.append((False, exc))

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def result(self, timeout: float) -> Any:
        self.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the background command did not finish within {timeout} s")
        ok, value = self._outcome[0]
        if not ok:
            raise value
        return value


def second_handle(env: AirflowEnv) -> AirflowEnv:
    """The same installation, for commands run beside ``env``'s (from another thread, while
    ``env`` has a ``one_process()`` block open): a fork server of its own, its command logs
    numbered apart."""
    other = copy.copy(env)
    other._one_overrides, other._count, other.server_tag = None, 100, "second"
    return other


@pytest.fixture(scope="module")
def story(make_airflow_env, s3_server: S3Server, gcs_server: GCSServer) -> Iterator[Story]:
    # PostgreSQL: two Airflow processes and the repair commands use the database at once.
    env = make_airflow_env("replicated", dags=["xcs_replicated.py"], database="postgres")
    loc = Locations(s3_server, gcs_server, f"t-{uuid.uuid4().hex[:12]}")
    configure(env, loc)
    gate = env.root / "gate-quorum-one"

    quorum_one: Background | None = None
    try:
        with env.one_process():
            # 1-2: the run, the damage, the consumer again.
            run = env.dags_test(DAG_ID, logical_date="2026-01-01T00:00:00+00:00")
            # The write_quorum = 1 run starts now in a process of its own (not before: two
            # processes registering the same new DAGs at once collide) and waits at the gate
            # until GCS is stopped; meanwhile the rest goes on in this process.
            quorum_one = Background(lambda: second_handle(env).dags_test(
                Q1_DAG, conf={"seed": 1, "gate": str(gate)}, env={"AIRFLOW__XCOMSTASH__WRITE_QUORUM": "1"}
            ))
            run.assert_success()
            refs = {t: env.xcom_value(DAG_ID, run.run_id, t) for t in PRODUCERS}
            after_run = loc.objects()
            for task_id, (where, how) in DAMAGE.items():
                getattr(loc, how)(where, loc.key_of(refs[task_id]))
            after_damage = loc.objects()
            seen = len(env.trace())
            rerun = env.tasks_test(DAG_ID, "check", run.run_id)
            rerun_pulls = [e for e in env.trace()[seen:] if e["op"] == "pull" and e["route"] == "stored"]

            # 3: repair, twice.
            repaired = repair(env)
            after_repair = loc.objects()
            repair_again = repair(env)

            # 4: GCS down; both quorum runs push now (each waits out GCS's client retries).
            gcs_server.stop()
            try:
                gate.touch()
                quorum_all = env.dags_test(QALL_DAG, conf={"seed": 2})
                quorum_one_run = quorum_one.result(timeout=300)
                gcs_down = {"s3": loc.s3_objects()}
            finally:
                restart_fake_gcs(gcs_server)
    finally:
        gate.touch()  # never leave the background run waiting
        if quorum_one is not None:
            quorum_one.join(timeout=300)
    repair_after_restart = repair(env)
    yield Story(
        env, loc, run, refs, after_run, rerun, rerun_pulls, after_damage, repaired, after_repair, repair_again,
        quorum_one_run, quorum_all, gcs_down, repair_after_restart, loc.objects(),
    )


def referenced_keys(story: Story) -> dict[str, str]:
    """Every key a row of the env references -> the row's coordinate."""
    keys = {}
    for row in story.env.xcom_rows():
        if row.is_reference:
            keys[story.loc.key_of(row.value)] = f"{row.dag_id}/{row.run_id}/{row.task_id}/{row.key}"
    return keys


# --------------------------------------------------------------------------------- tests


def test_a_run_writes_every_object_to_both_locations_byte_identical(story: Story) -> None:
    story.run.assert_success()
    V = dag_values_module()
    assert story.env.xcom_value(DAG_ID, story.run.run_id, "check") == {
        "make_frame": V.frame_digest(V.big_frame()),
        "make_array": V.array_digest(V.big_array()),
        "make_dict": V.json_digest(V.big_dict()),
    }
    s3, gcs = story.after_run["s3"], story.after_run["gcs"]
    referenced = {story.loc.key_of(ref) for ref in story.refs.values()}
    assert referenced <= set(s3), sorted(s3)
    assert set(s3) == set(gcs), (sorted(set(s3) ^ set(gcs)))
    for key in s3:
        assert s3[key] == gcs[key], f"{key}: the copies differ"


def test_each_reference_names_both_locations(story: Story) -> None:
    roots = [story.loc.roots["s3"], story.loc.roots["gcs"]]
    for task_id, ref in story.refs.items():
        assert ref["__xcomstash__"] == 1, ref
        assert ref["locations"] == roots, (task_id, ref)
        assert ref["uri"].startswith(roots[0] + "/"), ref


def test_a_rerun_consumer_reads_around_lost_and_damaged_copies(story: Story) -> None:
    """The consumer runs again after the damage: it receives exactly the producers' values,
    and the trace says which location served each one and which source failed first."""
    rerun = story.rerun
    assert rerun.returncode == 0 and rerun.task_state("check") == "success", rerun.describe()
    assert "XCS-WRONG-VALUE" not in rerun.output
    V = dag_values_module()
    assert story.env.xcom_value(DAG_ID, story.run.run_id, "check")["make_array"] == V.array_digest(V.big_array())
    # The damage was really there when it ran.
    keys = {t: story.loc.key_of(ref) for t, ref in story.refs.items()}
    assert keys["make_frame"] not in story.after_damage["gcs"] and keys["make_frame"] in story.after_damage["s3"]
    assert keys["make_dict"] not in story.after_damage["s3"] and keys["make_dict"] in story.after_damage["gcs"]
    assert story.after_damage["s3"][keys["make_array"]] != story.after_run["s3"][keys["make_array"]]

    pulls = {e["xcom"]["task_id"]: e for e in story.rerun_pulls if e["xcom"]["key"] == "return_value"}
    assert set(pulls) == set(PRODUCERS), story.rerun_pulls
    # S3 (replica:0) is read first; its copy of the frame is intact.
    assert pulls["make_frame"]["extra"]["source"] == "replica:0"
    assert "failover" not in pulls["make_frame"]["extra"]
    # The array's S3 copy fails verification, the dict's is gone: both come from GCS.
    assert pulls["make_array"]["extra"]["source"] == "replica:1"
    assert pulls["make_array"]["extra"]["failover"] == ["replica:0: IntegrityError"]
    assert pulls["make_dict"]["extra"]["source"] == "replica:1"
    assert pulls["make_dict"]["extra"]["failover"] == ["replica:0: ObjectMissingError"]


def test_repair_restores_every_copy_and_a_second_repair_finds_nothing_to_do(story: Story) -> None:
    first, second = story.repair, story.repair_again
    assert first["exit"] == 0, first
    assert (first["repaired"], first["copies"]) == (3, 3), first
    assert (first["lost"], first["errors"], first["refused"]) == ([], [], []), first
    assert story.after_repair["s3"] == story.after_run["s3"]
    assert story.after_repair["gcs"] == story.after_run["gcs"]
    assert second["exit"] == 0, second
    assert (second["repaired"], second["copies"]) == (0, 0), second
    assert second["healthy"] == 3 and second["complete"], second


def test_at_write_quorum_one_a_push_succeeds_with_gcs_down_and_repair_copies_it_later(story: Story) -> None:
    run, loc = story.quorum_one, story.loc
    run.assert_success()
    ref = story.env.xcom_value(Q1_DAG, run.run_id, "produce")
    assert ref["locations"] == [loc.roots["s3"]], ref  # only the location that took it
    key = loc.key_of(ref)
    assert key in story.gcs_down["s3"]
    # GCS back: repair copied exactly this value there, and now both copies are identical.
    report = story.repair_after_restart
    assert report["exit"] == 0, report
    assert (report["repaired"], report["copies"]) == (1, 1), report
    assert story.after_restart_repair["gcs"][key] == story.after_restart_repair["s3"][key]
    assert story.after_restart_repair["gcs"] == story.after_restart_repair["s3"]


def test_at_the_default_quorum_a_push_fails_with_gcs_down_and_leaves_nothing_referenced(story: Story) -> None:
    run = story.quorum_all
    assert run.state == "failed" and run.task_state("produce") == "failed", run.describe()
    log = run.task_log("produce")
    name, message = raised_exceptions(log)[-1]
    assert name == "xcomstash.errors.StoreUnavailableError", (name, message)
    assert "write_quorum is 2" in message and f"gs://{BUCKET}/{story.loc.prefix}" in message, message
    # The task's small XCom before the failed push is there; the value has no row, and the
    # copy S3 took was removed again: while GCS was down, S3 gained only the quorum-1 value.
    rows = {r.key: r for r in story.env.xcom_rows(QALL_DAG, run.run_id)}
    assert set(rows) == {"digest"} and not rows["digest"].is_reference, rows
    q1_key = story.loc.key_of(story.env.xcom_value(Q1_DAG, story.quorum_one.run_id, "produce"))
    assert set(story.gcs_down["s3"]) - set(story.after_repair["s3"]) == {q1_key}
    # No row anywhere names an object either location lacks.
    referenced = referenced_keys(story)
    assert set(referenced) <= set(story.gcs_down["s3"]), referenced
    assert set(referenced) <= set(story.after_restart_repair["gcs"]), referenced


#: Every command that reports JSON, as an operator's cron line would run it (``repair --json``
#: is parsed whole in the story above).
JSON_COMMANDS = [
    ("reconcile", "--dry-run", "--json", "--quiet"),
    ("retention", "--dry-run", "--policies", '[{"dag_id": "*", "max_age": "90d"}]', "--json", "--quiet"),
    ("verify", "--json", "--quiet"),
    ("stats", "--json", "--quiet"),
    ("migrate", "--dry-run", "--json", "--quiet"),
    ("audit", "--json"),
    ("keys", "rewrap", "--dry-run"),
]


def test_every_json_report_is_all_that_stdout_holds_with_an_s3_store(story: Story) -> None:
    """Airflow logs (the AWS connection's "credentials retrieved", warnings) go to stderr: the
    stdout of every ``--json`` command parses as JSON whole (JSON lines for ``audit``)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda argv: story.env.xcomstash(*argv), JSON_COMMANDS))
    for argv, result in zip(JSON_COMMANDS, results):
        assert result.returncode == 0, result.describe()
        if argv[0] == "audit":
            documents = [json.loads(line) for line in result.stdout.splitlines()]
            # This installation audits to the task log only: an empty answer says why.
            assert not documents and "durable audit log is off" in result.stderr, result.describe()
        else:
            documents = [json.loads(result.stdout)]
        assert all(isinstance(d, dict) for d in documents), (argv, result.stdout[:500])
