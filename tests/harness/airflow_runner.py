"""A fork server for Airflow commands: Airflow imported once, every command in a fresh child.

Run by the harness (``AirflowEnv``, see tests/harness/airflow.py), never imported by the
tests. Every ``airflow`` command is a fresh interpreter that imports Airflow, SQLAlchemy and
the providers (2-3 s of CPU) and, for ``dags test`` / ``tasks test``, builds Airflow's
in-process execution API and its versioned routes (Cadwyn generates one set per API version:
6-8 s of CPU more). This process does that work once, with the environment it was started
with, and then runs each command in a child forked from it: the child starts from exactly the
state a new ``airflow`` process would reach after those imports, runs the command through
``airflow.__main__.main`` (or ``xcomstash.cli.main``) with ``sys.argv`` set, as the scripts
do, and exits as an interpreter exits (threads joined, ``atexit`` handlers run: xcomstash's
audit and metrics flushes, Airflow's ``dispose_orm``). Nothing a command does (its engine,
caches, secrets registered with the log masker, a task that kills its own process) carries
over to the next command.

A command may bring environment variables of its own (``env``): only those read when they are
used, never at import (``LAZY_PREFIXES`` in tests/harness/airflow.py: xcomstash's options,
Airflow connections and variables from the environment, the test DAGs' own switches). The
harness starts another server for any other difference.

The execution API is built before the first ``dags test`` / ``tasks test`` (not at start: a
server that only runs ``xcomstash`` commands never needs it). Building it starts no thread
(the in-process transport, which does, is made by each child), so forking stays safe.

Protocol (one JSON object a line):

- stdin: ``{"argv": [...], "program": "airflow" | "xcomstash" | "python", "env": {...},
  "stdout": path, "stderr": path, "cwd": path}``: one command (``python``: argv is
  ``["-c", CODE, *ARGS]``; ``env``: name -> value, or null to unset; ``cwd``, optional: its
  working directory); its file descriptors 1 and 2 point at those files (so task logs written
  by any thread, or by C code, land in its own output).
- the original stdout (the control channel): ``{"returncode": n, "seconds": s, "cpu": s}``
  after each command (the child's exit code, negative for a signal; its CPU seconds); and,
  at end of input, ``{"exit": true, "cpu": s}`` with this process's CPU seconds, its
  children's included.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import resource
import sys
import threading
import time
import traceback
from pathlib import Path

#: Commands that run tasks through Airflow's in-process execution API.
_API_COMMANDS = (("dags", "test"), ("tasks", "test"))


def _cpu(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _exit_code(exc: SystemExit) -> int:
    """What the interpreter would exit with for this SystemExit (a message means 1)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _warm_execution_api() -> None:
    """Build the in-process execution API app Airflow caches per process
    (``supervisor.in_process_api_server``) and Cadwyn's versioned routes in it, which Cadwyn
    would otherwise generate on the app's first request, in each child."""
    from airflow.sdk.execution_time.supervisor import in_process_api_server
    from cadwyn import Cadwyn

    app = in_process_api_server().app
    pending = [app]
    while pending:
        current = pending.pop()
        if isinstance(current, Cadwyn) and not current._cadwyn_initialized:
            current._cadwyn_initialize()
        for route in getattr(getattr(current, "router", None), "routes", None) or ():
            sub = getattr(route, "app", None)
            if sub is not None and sub is not current:
                pending.append(sub)
    if threading.active_count() != 1:  # forking with other threads alive is not safe
        raise RuntimeError(f"building the execution API started threads: {threading.enumerate()}")


def _python_c() -> None:
    """``python -c CODE ARGS...``: ``sys.argv`` is ``["-c", CODE, *ARGS]`` here; the code runs
    as ``__main__`` with ``sys.argv == ["-c", *ARGS]``, as the interpreter would run it."""
    code = sys.argv.pop(1)
    sys.argv[0] = "-c"
    sys.path[0] = ""  # as for ``python -c``: the working directory first
    exec(compile(code, "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})


def _point(fd: int, path: str, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> None:
    target = os.open(path, flags, 0o644)
    os.dup2(target, fd)
    os.close(target)


def _child(request: dict, mains: dict, control_fd: int) -> None:
    """In the forked child: run one command and exit as the interpreter would. Never returns."""
    code = 70
    try:
        os.close(control_fd)
        for name, value in (request.get("env") or {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if request.get("cwd"):
            os.chdir(request["cwd"])
        # The directory listings the import system cached in this server are not the command's
        # to trust: a server may serve several installations in turn, each through the same
        # path (see "Shared servers" in tests/harness/airflow.py), and a new process starts
        # with none cached.
        importlib.invalidate_caches()
        _point(0, os.devnull, os.O_RDONLY)
        _point(1, request["stdout"])
        _point(2, request["stderr"])
        program = request.get("program", "airflow")
        sys.argv = [program, *request["argv"]]
        try:
            result = mains[program]()
            code = result if isinstance(result, int) else 0
        except SystemExit as exc:
            code = _exit_code(exc)
        except BaseException:  # what the interpreter would print before exiting 1
            traceback.print_exc()
            code = 1
        # What the interpreter does on its way out: join non-daemon threads, run atexit.
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    # Started as a script, this file's folder (tests/harness, which holds an airflow.py) heads
    # sys.path; the ``airflow`` script has its own folder there instead.
    sys.path[0] = str(Path(sys.executable).parent)
    control = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # import-time output goes to this process's stderr (the harness's log)
    # ``--imports-to-stderr``: for ``xcomstash`` commands that print a JSON report. The CLI
    # runs them with stdout redirected to stderr, so that Airflow, imported by the command,
    # binds its log output to stderr and the report is all stdout holds; Airflow is imported
    # here the same way.
    with contextlib.redirect_stdout(sys.stderr if "--imports-to-stderr" in sys.argv else sys.stdout):
        from airflow.__main__ import main as airflow_main
        from xcomstash.cli import main as xcomstash_main

    mains = {"airflow": airflow_main, "xcomstash": lambda: xcomstash_main(sys.argv[1:]), "python": _python_c}
    warmed = False
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if not warmed and tuple(request["argv"][:2]) in _API_COMMANDS:
            _warm_execution_api()
            warmed = True
        sys.stdout.flush()
        sys.stderr.flush()
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            _child(request, mains, control.fileno())
        _, status, usage = os.wait4(pid, 0)
        control.write(json.dumps({
            "returncode": os.waitstatus_to_exitcode(status),
            "seconds": time.perf_counter() - started,
            "cpu": usage.ru_utime + usage.ru_stime,
        }) + "\n")
    control.write(json.dumps({"exit": True, "cpu": _cpu() + _cpu(resource.RUSAGE_CHILDREN)}) + "\n")
    control.close()


if __name__ == "__main__":
    serve()
