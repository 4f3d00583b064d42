"""Virtualenvs of other Airflow releases, made with uv and kept between test runs.

The main ``.venv`` runs one Airflow release (from uv.lock) for the whole suite; the versions
tier needs the other supported minors too. Each gets a virtualenv of its own under
``.cache/airflow-venvs/<release>-<key>`` (git-ignored), where the key is a hash of everything
the installation depends on: the pinned Airflow release, the date its dependencies are
resolved as of, the extra packages, the Python version, the repository's path and its
``[project]`` table (dependencies, entry points); a new key replaces the release's old
directory. A second run finds the directory complete and installs nothing; uv's own download
cache (``~/.cache/uv``, shared with ``scripts/bootstrap.sh``) serves the wheels of a reinstall.

xcomstash is installed editable from this checkout, so source changes need no reinstall.
A migrated SQLite metadata database is kept beside each virtualenv, so a run copies it instead
of running ``airflow db migrate`` again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tests.harness.airflow import REPO, clean_environ, record_command

CACHE = REPO / ".cache" / "airflow-venvs"
#: Written last: a directory without it is a half-made installation and is made again.
COMPLETE = "complete.json"
INSTALL_TIMEOUT_S = 900


@dataclass(frozen=True)
class Release:
    """An Airflow release and how to install it reproducibly without its constraints file."""

    airflow: str
    #: Dependencies are resolved as of this date (the end of the release's month): what a user
    #: installing it then got. Today's newest packages need not work with an older Airflow
    #: (pydantic 2.14, for one, breaks the task runner of 3.2.2).
    exclude_newer: str
    #: What the tier's DAG needs besides Airflow and xcomstash.
    extras: tuple[str, ...] = ("pandas",)

    @property
    def minor(self) -> str:
        return ".".join(self.airflow.split(".")[:2])


@dataclass(frozen=True)
class Installation:
    release: Release
    root: Path
    #: What making it cost here (0 when it was found in the cache).
    install_seconds: float

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    def bin(self, name: str) -> Path:
        return self.root / "venv" / "bin" / name

    @property
    def migrated_db(self) -> Path:
        return self.root / "migrated.db"


def cache_key(release: Release) -> str:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    inputs = {
        "airflow": release.airflow,
        "exclude_newer": release.exclude_newer,
        "extras": release.extras,
        "python": list(sys.version_info[:2]),
        "repo": str(REPO),
        "project": project,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]


def uv_command() -> list[str]:
    """uv: from this interpreter, on PATH, or from the interpreter ``scripts/bootstrap.sh``
    installed it into (the one ``.venv`` was made from)."""
    candidates = [[sys.executable, "-m", "uv"], [shutil.which("uv") or ""]]
    base = getattr(sys, "_base_executable", "")
    if base:
        candidates.append([base, "-m", "uv"])
    for command in candidates:
        if not command[0]:
            continue
        probe = subprocess.run([*command, "--version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return command
    raise RuntimeError("uv not found (scripts/bootstrap.sh installs it into the Python that made .venv)")


def _run(argv: list[str], log: Path, env: dict[str, str] | None = None, timeout: float = INSTALL_TIMEOUT_S) -> None:
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    record_command(argv, time.perf_counter() - started, None, airflow=log.parent.name.split("-")[0])
    with open(log, "a") as f:
        f.write(f"$ {' '.join(argv)}\n(exit {proc.returncode})\n{proc.stdout}\n{proc.stderr}\n")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} ... failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


def ensure(release: Release) -> Installation:
    """The installation of ``release``, made if the cache lacks it (one maker at a time)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    root = CACHE / f"{release.airflow}-{cache_key(release)}"
    with open(CACHE / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / COMPLETE).exists():
            return Installation(release, root, 0.0)
        started = time.perf_counter()
        for stale in CACHE.glob(f"{release.airflow}-*"):  # this release, other inputs: replaced
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        root.mkdir()
        _make(release, root)
        seconds = time.perf_counter() - started
        (root / COMPLETE).write_text(json.dumps({"release": release.airflow, "seconds": round(seconds, 1)}))
        return Installation(release, root, seconds)


def _make(release: Release, root: Path) -> None:
    uv, log, venv = uv_command(), root / "install.log", root / "venv"
    _run([*uv, "venv", "--quiet", "--python", sys.executable, str(venv)], log)
    _run(
        [
            *uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
            "--exclude-newer", release.exclude_newer,
            f"apache-airflow=={release.airflow}", *release.extras, "--editable", str(REPO),
        ],
        log,
    )
    # The metadata database, migrated once (a run copies it).
    home = root / "migrate-home"
    home.mkdir()
    env = clean_environ()
    env.pop("PYTHONPATH", None)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{root / 'migrated.db'}",
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
    )
    _run([str(venv / "bin" / "airflow"), "db", "migrate"], log, env=env, timeout=300)
    shutil.rmtree(home, ignore_errors=True)
    if not (root / "migrated.db").exists():
        raise RuntimeError(f"airflow db migrate left no {root / 'migrated.db'}")


def installed_version(installation: Installation, distribution: str) -> str | None:
    """The version of ``distribution`` in the installation (from its dist-info directory)."""
    prefix = distribution.replace("-", "_") + "-"
    for site in (installation.root / "venv" / "lib").glob("python*/site-packages"):
        for info in site.glob(f"{prefix}*.dist-info"):
            return info.name[len(prefix):-len(".dist-info")]
    return None

