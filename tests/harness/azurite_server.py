"""Azurite (Microsoft's Azure Storage emulator, blob service only) for tests.

Import-safe: importing starts nothing and needs no Azure SDK. ``scripts/test-deps.sh`` installs
Azurite from npm into ``.cache/npm`` (git-ignored). In memory, on a free loopback port, stopped
by process id. See /work/shared/RECIPES.md.

    server = start_azurite(tmp_dir)
    client = server.client()     # a BlobServiceClient for the well-known devstoreaccount1
    server.stop()
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.servers import LOOPBACK, STOP_GRACE_S, _die_with_parent, free_port

__all__ = ["ACCOUNT", "ACCOUNT_KEY", "AzuriteServer", "azurite_binary", "start_azurite"]

#: Azurite's built-in development account (public, documented by Microsoft).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


def azurite_binary() -> str:
    """``azurite-blob`` from the repo's npm cache (scripts/test-deps.sh), else on PATH."""
    candidate = REPO / ".cache" / "npm" / "node_modules" / ".bin" / "azurite-blob"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("azurite-blob")
    if not found:
        raise FileNotFoundError("azurite-blob not found: run scripts/test-deps.sh (npm install azurite)")
    return found


@dataclass
class AzuriteServer:
    port: int
    container: str = "xcom"
    log_path: Path | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else 0

    @property
    def account_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return connection_string(self.port)

    def client(self, *, timeout: float = 5.0, retries: int = 1, port: int | None = None):
        """A ``BlobServiceClient`` with short timeouts and one quick retry (tests fail fast);
        ``port``: reach the server through another port (a proxy in front of it)."""
        from xcomstash.stores.azure import service_client

        return service_client(
            connection_string=connection_string(port or self.port),
            connection_timeout=timeout,
            read_timeout=timeout,
            **_retry(retries),
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a few seconds."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=STOP_GRACE_S)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_GRACE_S)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:] if self.log_path else ""
        except OSError:
            return ""


def connection_string(port: int) -> str:
    """The development account's connection string for an Azurite blob endpoint on ``port``."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{LOOPBACK}:{port}/{ACCOUNT};"
    )


def _retry(retries: int) -> dict:
    from azure.storage.blob import ExponentialRetry

    # No waiting between attempts (backoff = initial_backoff + increment_base ** attempt).
    policy = ExponentialRetry(initial_backoff=0, increment_base=0, retry_total=retries, random_jitter_range=0)
    return {"retry_policy": policy}


def start_azurite(
    workdir: Path, *, container: str = "xcom", timeout: float = START_TIMEOUT_S, memory_limit_mb: int = 512
) -> AzuriteServer:
    """``azurite-blob`` in memory (at most ``memory_limit_mb`` of blob data) on a free loopback
    port; waits for the TCP port, then creates ``container``. Raises ``RuntimeError`` with the
    log if it never answers."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / "azurite.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [azurite_binary(), "--blobHost", LOOPBACK, "--blobPort", str(port),
             "--inMemoryPersistence", "--extentMemoryLimit", str(memory_limit_mb), "--silent", "--skipApiVersionCheck",
             "--loose", "--disableTelemetry"],
            cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent
            if sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()
            else None,
        )
    server = AzuriteServer(port=port, container=container, log_path=log_path, _proc=proc)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"azurite-blob exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                socket.create_connection((LOOPBACK, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"azurite-blob did not listen on {port} within {timeout:g} s:\n{server.log_tail()}"
                    )
                time.sleep(0.05)
        server.client().create_container(container)
    except BaseException:
        server.stop()
        raise
    return server
