"""An overall bound on one push or one pull of a stored value.

Each store client has its own request timeouts and retries, but a push is many requests
(parts, a publish, a link) and a pull too (ranges, a failover to another location): their
timeouts add up, and a service that accepts connections and never answers can hold a task for
many times the figure an operator configured. The deadline bounds the whole operation: the
work runs on a thread of its own and the caller waits at most ``seconds``, then gets a
:class:`~xcomstash.errors.StoreTimeoutError` naming the deadline and the store.

The abandoned work is left to finish or fail on its own (a thread cannot be killed). A push
that completes after its deadline publishes an object that no row references: ``reconcile``
collects it after its grace period. Only stored values pay for the hand-off; inline values never
touch the store.

The threads are reused: starting one per operation cost more CPU than a whole push of a small
frame to a local disk (a fan-in of a thousand mapped values paid it two thousand times). A
finished thread waits :data:`IDLE_SECONDS` for the next operation, then exits; an operation
that finds no idle thread starts one, so work stuck on a hung store never delays another
operation's start. A forked child forgets its parent's threads (they do not exist in it).
"""

from __future__ import annotations

import contextvars
import os
import queue
import threading
import time
from typing import Any, Callable, TypeVar

from xcomstash.errors import StoreTimeoutError

T = TypeVar("T")

#: How long a deadline thread with nothing to do waits for the next operation before it exits.
IDLE_SECONDS = 30.0


class _Worker:
    """One reusable daemon thread: runs the jobs handed to it, one at a time."""

    def __init__(self, runner: _Runner) -> None:
        self._runner = runner
        self._jobs: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]] = queue.SimpleQueue()
        # A daemon thread: work stuck on a hung service must not keep the process alive at exit.
        self.thread = threading.Thread(target=self._loop, name="xcomstash-deadline", daemon=True)

    def give(self, job: Callable[[], None], done: threading.Event) -> None:
        self._jobs.put((job, done))

    def _loop(self) -> None:
        timeout: float | None = IDLE_SECONDS
        while True:
            try:
                job, done = self._jobs.get(timeout=timeout)
            except queue.Empty:
                if self._runner.retire(self):
                    return
                timeout = None  # taken for a job just now: it is on its way
                continue
            try:
                job()
            finally:
                del job  # the finished job's closure (its value) is not kept while idle
                timeout = IDLE_SECONDS
                # Idle again before the caller learns the job is done, so that its next
                # operation finds this thread rather than starting another.
                self._runner.idle(self)
                done.set()


class _Runner:
    """The deadline threads of this process: idle ones are reused, none are shared by two
    operations at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []

    def run(self, job: Callable[[], None], done: threading.Event) -> None:
        """``job`` (which must not raise) on an idle thread, or on a new one if none is idle;
        ``done`` is set when it has finished."""
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None:
            worker = _Worker(self)
            worker.give(job, done)
            worker.thread.start()
        else:
            worker.give(job, done)

    def idle(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def retire(self, worker: _Worker) -> bool:
        """Whether an idle ``worker`` may exit (False: it was just taken for a job)."""
        with self._lock:
            if worker in self._idle:
                self._idle.remove(worker)
                return True
            return False

    def _forget(self) -> None:
        """In a forked child: the parent's threads are not there."""
        self._lock = threading.Lock()
        self._idle = []


_RUNNER = _Runner()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_RUNNER._forget)


class Started:
    """Work running on a deadline thread, with its own deadline counted from its start. Many
    can run at once (a fan-in): each is bounded on its own, and none waits for a free thread."""

    __slots__ = ("_outcome", "_done", "_until", "seconds")

    def __init__(self, seconds: float | None, work: Callable[[], Any]) -> None:
        self.seconds = seconds
        self._outcome: list[Any] = []
        self._done = threading.Event()
        self._until = time.monotonic() + seconds if seconds is not None else None
        context = contextvars.copy_context()
        outcome = self._outcome

        def run() -> None:
            try:
                outcome.append((True, context.run(work)))
            except BaseException as exc:  # handed to the caller
                outcome.append((False, exc))

        _RUNNER.run(run, self._done)

    def result(self, what: Callable[[], str]) -> Any:
        """The work's value or its exception, or :class:`StoreTimeoutError` once its deadline
        has passed."""
        if self._until is None:
            self._done.wait()
        elif not self._done.wait(max(0.0, self._until - time.monotonic())):
            raise StoreTimeoutError(
                f"{what()} did not finish within {self.seconds:g} s (push_timeout / pull_timeout): the store "
                "did not answer in time"
            )
        ok, result = self._outcome[0]
        if ok:
            return result
        raise result


def within(seconds: float | None, work: Callable[[], T], what: Callable[[], str]) -> T:
    """``work()``, or :class:`StoreTimeoutError` once ``seconds`` have passed (``None``: no bound).

    ``what()`` names the operation for the error (built only when the deadline passes)."""
    if seconds is None:
        return work()
    return Started(seconds, work).result(what)
