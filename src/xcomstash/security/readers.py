"""Who may read a value, and whether a reference is being read where it was written.

**Restricted reads.** A producer may declare who may pull a value::

    from xcomstash import Restricted
    return Restricted(df, tasks=["load"])        # only task "load" of this DAG
    return Restricted(df)                        # any task of this DAG, no other DAG

or a deployment / DAG pattern may make ``read_scope = dag`` the default. The allowed readers
go into the reference as ``readers`` (covered by the reference MAC when signing is on, so they
cannot be edited through the database), and every reader checks them against the task it
runs in (:class:`Actor`) before touching the store; others get :class:`AccessDeniedError`.

What this protects against *on its own*: tasks of other DAGs (or other tasks) pulling a value
through xcomstash by mistake or by a DAG author's choice, in a deployment whose workers all
run xcomstash. It is enforced by the reading worker's own code, so code that reads the bucket
directly, or a worker running a modified backend, is not stopped by it. *Combined with scoped
keysets* (another team's workers hold no key for this DAG's objects, see
:mod:`xcomstash.security.crypto.keyset`), it is: such a worker can neither decrypt the object nor sign
a reference to it.

**Where a reference is read.** A reference names the XCom it was written for (``xcom``,
signed). The reader knows which XCom it asked for (:class:`Expected`): a signed reference that
turns up in another DAG's row (copied through the REST API or SQL) is rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from xcomstash.coordinate import XComCoordinate
from xcomstash.errors import AccessDeniedError, InvalidReferenceError, ReferenceSignatureError


@dataclass(frozen=True)
class Actor:
    """The task instance whose code is running (the pusher or puller)."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
    try_number: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "task_id": self.task_id,
            "map_index": self.map_index,
            "try_number": self.try_number,
        }


class Restricted:
    """A value with the readers its producer allows: ``tasks`` of the producing DAG, or (with
    no tasks) any task of the producing DAG. Unwrapped before the value is stored; its repr
    does not show the value (so Airflow's "Returned value was" log line does not either)."""

    __slots__ = ("value", "tasks")

    def __init__(self, value: Any, tasks: Iterable[str] | None = None) -> None:
        self.value = value
        self.tasks = tuple(sorted(set(tasks))) if tasks is not None else None
        if self.tasks is not None and not all(isinstance(t, str) and t for t in self.tasks):
            raise TypeError("Restricted(tasks=...) takes task ids (non-empty strings)")

    def __repr__(self) -> str:
        who = f"tasks {', '.join(self.tasks)}" if self.tasks else "this DAG"
        return f"<xcomstash.Restricted {type(self.value).__name__} readable by {who}>"


@dataclass(frozen=True)
class Readers:
    """The ``readers`` field of a reference."""

    dag_id: str
    tasks: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"dag_id": self.dag_id}
        if self.tasks is not None:
            doc["tasks"] = list(self.tasks)
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> Readers:
        if not isinstance(doc, dict) or set(doc) - {"dag_id", "tasks"} or not isinstance(doc.get("dag_id"), str):
            raise InvalidReferenceError("malformed xcomstash reference: bad readers")
        tasks = doc.get("tasks")
        if tasks is not None:
            if not isinstance(tasks, list) or len(tasks) > 1000 or not all(isinstance(t, str) for t in tasks):
                raise InvalidReferenceError("malformed xcomstash reference: bad readers")
            tasks = tuple(tasks)
        return cls(doc["dag_id"], tasks)

    def check(self, actor: Actor | None, what: str) -> None:
        allowed = f"tasks {', '.join(self.tasks)} of DAG {self.dag_id!r}" if self.tasks else f"DAG {self.dag_id!r}"
        if actor is None:
            raise AccessDeniedError(
                f"{what} may only be read by {allowed}, and this reader is not running inside a task"
            )
        if actor.dag_id != self.dag_id or (self.tasks is not None and actor.task_id not in self.tasks):
            raise AccessDeniedError(
                f"{what} may only be read by {allowed}; task {actor.task_id!r} of DAG {actor.dag_id!r} "
                "is not allowed (the producer restricted its readers)"
            )


def readers_for(value: Any, producer: XComCoordinate, default_scope: str) -> tuple[Any, Readers | None]:
    """Unwrap :class:`Restricted` and decide the readers (``read_scope = dag`` as default)."""
    if isinstance(value, Restricted):
        return value.value, Readers(producer.dag_id, value.tasks)
    if default_scope == "dag":
        return value, Readers(producer.dag_id)
    return value, None


@dataclass(frozen=True)
class Expected:
    """What the reader asked for; ``None`` fields are unknown to it (and not checked)."""

    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    key: str | None = None

    def check(self, written_for: XComCoordinate | None, what: str) -> None:
        """A reference written for another XCom than the one asked for was copied there."""
        if written_for is None:
            return
        for name in ("dag_id", "run_id", "task_id", "map_index", "key"):
            wanted = getattr(self, name)
            if wanted is not None and getattr(written_for, name) != wanted:
                raise ReferenceSignatureError(
                    f"{what} was written for {name}={getattr(written_for, name)!r} but was found in the row "
                    f"of {name}={wanted!r}: the reference was copied into another XCom's row"
                )
