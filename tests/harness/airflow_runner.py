"""Several Airflow CLI commands, one after another, in one Airflow process.

Run by the harness (``AirflowEnv.one_process()``), never imported by the tests. Every
``airflow`` command is a fresh interpreter that imports Airflow, SQLAlchemy, pandas and pyarrow
(2-3 s of CPU) and, for ``dags test`` / ``tasks test``, builds Airflow's in-process execution
API (its versioned routes: 4-7 s of CPU more). A test that runs several commands in a row with
the same configuration pays that once here: this process imports Airflow once and runs each
command through ``airflow.__main__.main`` with ``sys.argv`` set, exactly what the ``airflow``
script does; the execution API app Airflow caches per process is then built once.

Protocol (one JSON object a line):

- stdin: ``{"argv": [...], "stdout": path, "stderr": path}``: one command; its file
  descriptors 1 and 2 point at those files while it runs (so task logs written by any thread,
  or by C code, land in the command's own output).
- the original stdout (the control channel): ``{"returncode": n, "seconds": s, "cpu": s}``
  after each command, the exit code ``airflow`` would have exited with; and, at end of input,
  ``{"exit": true, "cpu": s}`` with this process's total CPU seconds.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
import traceback
from pathlib import Path


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
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


def _stream_handlers() -> list[tuple[logging.StreamHandler, object]]:
    handlers = []
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, logging.StreamHandler) and "stream" in vars(handler):
                handlers.append((handler, handler.stream))
    return handlers


def run(argv: list[str], main) -> int:
    """One ``airflow`` command, as the ``airflow`` script runs it."""
    # ``main`` points console log handlers at stderr for commands that take ``-o`` (structured
    # output); put them back afterwards, as the next command would find them in a new process.
    handlers = _stream_handlers()
    sys.argv = ["airflow", *argv]
    try:
        main()
        return 0
    except SystemExit as exc:
        return _exit_code(exc)
    except BaseException:  # what the interpreter would print before exiting 1
        traceback.print_exc()
        return 1
    finally:
        for handler, stream in handlers:
            handler.stream = stream
        _fresh_xcomstash()


def _fresh_xcomstash() -> None:
    """Start the next command with what a new process would have: xcomstash's process-wide
    engine (its stores, keysets, caches, read-ahead) is closed, so the next command builds it
    again from the configuration and files as they are then. A test that edits rows, objects
    or keys between commands sees them read afresh, as in separate processes."""
    settings = sys.modules.get("xcomstash.airflow.settings")
    if settings is None or not settings.engine.cache_info().currsize:
        return
    try:
        settings.engine().close()  # writes out its audit events
    except Exception:
        traceback.print_exc()
    settings.engine.cache_clear()


def _flush() -> None:
    sys.stdout.flush()
    sys.stderr.flush()


def _point(fd: int, path: str) -> None:
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(target, fd)
    os.close(target)


def serve() -> None:
    # Started as a script, this file's folder (tests/harness, which holds an airflow.py) heads
    # sys.path; the ``airflow`` script has its own folder there instead.
    sys.path[0] = str(Path(sys.executable).parent)
    control = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # import-time output goes to this process's stderr (the harness's log)
    from airflow.__main__ import main

    base_out, base_err = os.dup(1), os.dup(2)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        _flush()
        _point(1, request["stdout"])
        _point(2, request["stderr"])
        started, cpu = time.perf_counter(), _cpu()
        code = run(request["argv"], main)
        seconds, cpu = time.perf_counter() - started, _cpu() - cpu
        _flush()
        os.dup2(base_out, 1)
        os.dup2(base_err, 2)
        control.write(json.dumps({"returncode": code, "seconds": seconds, "cpu": cpu}) + "\n")
    control.write(json.dumps({"exit": True, "cpu": _cpu()}) + "\n")
    control.close()


if __name__ == "__main__":
    serve()
