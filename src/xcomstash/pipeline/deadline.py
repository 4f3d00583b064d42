"""An overall bound on one push or one pull of a stored value.

Each store client has its own request timeouts and retries, but a push is many requests
(parts, a publish, a link) and a pull too (ranges, a failover to another location): their
timeouts add up, and a service that accepts connections and never answers can hold a task for
many times the figure an operator configured. The deadline bounds the whole operation: the
work runs on a thread of its own and the caller waits at most ``seconds``, then gets a
:class:`~xcomstash.errors.StoreTimeoutError` naming the deadline and the store.

The abandoned work is left to finish or fail on its own (a thread cannot be killed). A push
that completes after its deadline publishes an object that no row references: ``reconcile``
collects it after its grace period. Only stored values pay for the thread; inline values never
touch the store.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Callable, TypeVar

from xcomstash.errors import StoreTimeoutError

T = TypeVar("T")


def within(seconds: float | None, work: Callable[[], T], what: Callable[[], str]) -> T:
    """``work()``, or :class:`StoreTimeoutError` once ``seconds`` have passed (``None``: no bound).

    ``what()`` names the operation for the error (built only when the deadline passes)."""
    if seconds is None:
        return work()
    outcome: list = []
    done = threading.Event()
    context = contextvars.copy_context()

    def run() -> None:
        try:
            outcome.append((True, context.run(work)))
        except BaseException as exc:  # handed to the caller
            outcome.append((False, exc))
        finally:
            done.set()

    # A daemon thread: work stuck on a hung service must not keep the process alive at exit.
    threading.Thread(target=run, name="xcomstash-deadline", daemon=True).start()
    if not done.wait(seconds):
        raise StoreTimeoutError(
            f"{what()} did not finish within {seconds:g} s (push_timeout / pull_timeout): the store "
            "did not answer in time"
        )
    ok, result = outcome[0]
    if ok:
        return result
    raise result
