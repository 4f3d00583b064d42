"""Child processes the deployment harness starts, and stops again, by process id.

Each process gets its own session (so its process group id is its pid): stopping sends
SIGTERM to the pid, waits, then SIGKILLs whatever is left of its group and of its process tree
(Airflow's scheduler and Celery workers fork task supervisors, and each task process puts
itself in a process group of its own: a killed leader must not leave them behind). The tree is
read from /proc before any signal is sent, since orphans are re-parented. Output goes to a log
file kept for failure messages.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Best effort: the child gets SIGTERM if pytest dies without cleaning up."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


@dataclass
class Process:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen = field(repr=False)
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def describe(self, lines: int = 60) -> str:
        state = "running" if self.alive() else f"exited {self.popen.returncode}"
        return f"--- {self.name} (pid {self.pid}, {state}) {self.log_path} ---\n{self.log_tail(lines)}"

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the pid, then SIGKILL to its group and tree after ``grace`` seconds; any
        descendant still alive after a clean exit is SIGKILLed too."""
        tree = descendants(self.pid)
        if self.alive():
            _signal(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self._kill_all(tree + descendants(self.pid))

    def kill(self) -> None:
        """SIGKILL the process and its whole tree at once: a machine that dies."""
        self._kill_all(descendants(self.pid))

    def _kill_all(self, tree: list[tuple[int, str]]) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)  # the group id is the pid (own session)
        except (ProcessLookupError, PermissionError):
            pass
        for pid, started in tree:
            if _start_time(pid) == started:  # still the same process, not a reused pid
                _signal(pid, signal.SIGKILL)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
            pass


def stop_all(processes: Iterable[Process], grace: float = 10.0) -> None:
    """:meth:`Process.stop` for several processes at once: SIGTERM to each, one shared grace
    period, then SIGKILL to whatever is left of each process group and tree."""
    procs = list(processes)
    trees = {p.pid: descendants(p.pid) for p in procs}
    for p in procs:
        if p.alive():
            _signal(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        p._kill_all(trees[p.pid] + descendants(p.pid))


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(") ", 1)[-1].split()  # fields after the command name


def _start_time(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[19] if fields else None  # field 22 of stat: start time in clock ticks


def descendants(root: int) -> list[tuple[int, str]]:
    """Every live descendant of ``root`` as (pid, start time), read from /proc."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            starts[int(entry.name)] = fields[19]
    out: list[tuple[int, str]] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append((child, starts[child]))
            stack.append(child)
    return out


def spawn(
    name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path, cwd: Path | None = None
) -> Process:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        popen = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent
            if sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()
            else None,
        )
    return Process(name=name, argv=list(argv), log_path=log_path, popen=popen)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0): look at its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return False
