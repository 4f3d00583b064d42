"""The engine: one push path and one pull path over a store. Knows nothing of Airflow.

push: value -> admit -> route -> encode -> frame -> place -> publish -> reference [signed]
      (:mod:`xcomstash.pipeline.push`, :mod:`xcomstash.pipeline.place`)
pull: reference -> open [MAC, expected XCom, readers] -> locate -> sources (read-ahead, cache,
      store; each verified) -> decode  (:mod:`xcomstash.pipeline.pull`)

Security (:class:`~xcomstash.security.guard.Guard`) and observation
(:class:`~xcomstash.observe.events.Observer`) are fixed stages of both paths: switched off,
they are no-op objects, never a second path. This class only assembles the stages and is
what callers hold.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from xcomstash.codecs import CodecRegistry, default_registry
from xcomstash.codecs.json import PLAIN_JSON, StructureConverter
from xcomstash.config import StashConfig
from xcomstash.coordinate import XComCoordinate
from xcomstash.observe.audit import AuditRecorder
from xcomstash.format.keyspace import dag_of
from xcomstash.observe.events import OK, Event, Observer, Subscriber
from xcomstash.observe.trace import TraceRecorder, log
from xcomstash.pipeline.place import Placer
from xcomstash.pipeline.pools import Pools
from xcomstash.pipeline.pull import Opened, PullPath
from xcomstash.errors import PurgeRefusedError
from xcomstash.pipeline.purge import PurgeResult, purge_objects
from xcomstash.pipeline.move import MoveResult
from xcomstash.pipeline.repair import RepairResult
from xcomstash.pipeline.push import PushPath
from xcomstash.pipeline.selection import PartialRead
from xcomstash.preview import PreviewLimits, PreviewResult
from xcomstash.security.guard import Guard, open_guard
from xcomstash.security.readers import Expected
from xcomstash.stores import ClientFactory, Store, open_store, with_cache

__all__ = ["Engine"]


class Engine:
    """Push and pull values of XComs. Thread-safe; one per process is enough."""

    def __init__(
        self,
        config: StashConfig,
        store: Store | None = None,
        *,
        registry: CodecRegistry = default_registry,
        converter: StructureConverter = PLAIN_JSON,
        clients: ClientFactory | None = None,
        trace_file: str | None = None,
        guard: Guard | None = None,
        subscribers: Iterable[Subscriber] = (),
    ) -> None:
        self.config = config
        store = store or open_store(
            config.store_url, clients=clients, write_quorum=config.write_quorum, read_order=config.read_order,
            dag_stores=config.dag_stores, previous=config.previous_store_urls,
        )
        self.store = with_cache(store, config.cache_dir, config.cache_max_bytes)
        #: Security checks and keys; with nothing configured it still checks readers.
        self.guard = guard or open_guard()
        self.observer = Observer(_subscribers(self.guard, trace_file, subscribers))
        self.pools = Pools()
        placer = Placer(self.store, config, self.guard, self.pools.frames)
        self._push = PushPath(config, registry, converter, self.guard, placer, self.observer)
        self._pull = PullPath(
            config, self.store, registry, self._push.json_codec, self.guard, placer, self.observer, self.pools
        )

    # ------------------------------------------------------------------ push

    def serialize(self, value: Any, coordinate: XComCoordinate) -> Any:
        """What goes into the xcom row: the value's JSON structure (inline) or a reference."""
        return self._push.push(value, coordinate)

    # ------------------------------------------------------------------ pull

    def deserialize(
        self,
        stored: Any,
        coordinate: XComCoordinate | None = None,
        *,
        readahead: bool = True,
        expected: Expected | None = None,
    ) -> Any:
        """The value for what an xcom row holds; raises a :class:`~xcomstash.errors.ReadError`
        subclass, never a wrong value.

        ``expected`` says which XCom the reader asked for (what it knows of it); a reference
        written for another XCom is rejected before the store is touched. ``coordinate``: the
        row's own XCom, when the caller knows it."""
        return self._pull.pull(stored, coordinate, expected=expected, readahead=readahead)

    def deserialize_many(self, stored_values: list[Any], *, expected: Expected | None = None) -> list[Any]:
        """Values for many rows at once (a mapped task's fan-in), fetched concurrently; order
        is preserved and the first failure (in order) is raised."""
        return self._pull.pull_many(stored_values, expected=expected)

    def move_rows(
        self,
        rows: Iterable[tuple[Any, XComCoordinate]],
        replace: Callable[[XComCoordinate, Any, Any], bool],
        *,
        dry_run: bool = False,
    ) -> MoveResult:
        """Maintenance (``xcomstash move``): copy values out of previous stores into the
        store their DAG writes to now and rewrite their rows (``replace(coordinate, new, old)``,
        a compare-and-set)."""
        return self._pull.move(rows, replace, dry_run=dry_run)

    def get_stored(self, coordinate: XComCoordinate) -> Any:
        """The value of an XCom read from the store alone, without its database row (a
        notebook, a debugging shell): integrity is verified, authorship only where the object
        is encrypted (see :meth:`PullPath.get_stored` for exactly what is and is not checked)."""
        return self._pull.get_stored(coordinate)

    def read_table(
        self,
        stored: Any,
        columns: Sequence[str] | None = None,
        rows: tuple[int, int | None] | None = None,
        *,
        expected: Expected | None = None,
    ) -> tuple[Any, PartialRead | None]:
        """Some columns and/or rows ``[start, stop)`` of a stored table (pandas DataFrame or
        pyarrow Table), fetching and verifying only the frames that hold them. Other values
        (inline rows, polars, non-string pandas labels) are read whole and
        then sliced. The second item says what was fetched (None for a whole read)."""
        return self._pull.read_table(stored, columns, rows, expected=expected)

    def preview(
        self,
        stored: Any,
        coordinate: XComCoordinate,
        limits: PreviewLimits = PreviewLimits(),
        *,
        actor: dict[str, Any] | None = None,
    ) -> PreviewResult:
        """What a person is shown of the value a row holds (the Airflow UI's XCom tab): a
        table's schema, row count and first rows (a partial read of a bounded number of
        bytes), an array's shape and statistics, JSON cut at a limit, a hex head of bytes,
        masked for sensitive data. ``coordinate``: the row's own XCom. The same pull path and
        checks as :meth:`deserialize` (a refused or damaged value raises the same errors),
        audited as a ``preview`` by ``actor`` (e.g. ``{"user": "alice", "via": "airflow ui"}``)."""
        return self._pull.preview(stored, coordinate, limits, actor)

    # ----------------------------------------------------------------- purge

    def purge(self, stored: Any, coordinate: XComCoordinate | None = None) -> bool:
        """Forget what a row references; True if the row held a reference that was purged.

        ``coordinate`` is the XCom whose row this is (Airflow's row names it): a per-XCom
        object is deleted, a shared blob loses this XCom's link and goes only when no link is
        left (other XComs of the run may hold the same payload). A reference that fails the
        pull checks against that XCom (forged, copied from another row) or points outside
        its objects deletes nothing (logged and audited). Without a coordinate nothing can
        be checked: :class:`~xcomstash.errors.PurgeRefusedError`.
        """
        if coordinate is None:
            raise PurgeRefusedError(
                "a purge must name the XCom whose row is going (dag_id, run_id, task_id, map_index, key): "
                "without it a row copied from another XCom would delete that XCom's object"
            )
        result = self.purge_rows([(stored, coordinate)])
        for refusal in result.refused:
            log.warning("xcomstash: not purging a reference that does not belong to its row: %s", refusal)
        return result.purged > 0

    def purge_rows(self, rows: Iterable[tuple[Any, XComCoordinate]]) -> PurgeResult:
        """:meth:`purge` for many rows at once (retention drops whole runs): every reference
        is checked against its own row, then the objects go in one pass (one listing of links
        per DAG run). Refusals are counted in the result, never raised."""
        result = self._pull.purge(rows, self._delete)
        for problem in result.errors:
            log.warning("xcomstash: purge incomplete: %s", problem)
        return result

    def repair_rows(self, rows: Iterable[tuple[Any, XComCoordinate]], *, dry_run: bool = False) -> RepairResult:
        """Copy each row's value to the locations of a replicated store that lack it or hold
        a damaged copy, from a copy that verifies (see :mod:`xcomstash.pipeline.repair`).
        References are checked against their rows first; refusals are counted, never raised."""
        return self._pull.repair(rows, dry_run=dry_run)

    def observe_deletion(self, coordinate: XComCoordinate | None, key: str, size: int) -> None:
        """Observe (audit) an object maintenance deleted without a row to purge it for (an
        orphan reconcile collected): one ``purge`` event per object."""
        xcom: Any = coordinate if coordinate is not None else {"dag_id": dag_of(key)}
        self.observer.emit(Event("purge", OK, xcom, uri=self.store.uri_for(key), size=size))

    def _delete(self, opened: list[Opened]) -> PurgeResult:
        return purge_objects(self.store, [(o.coordinate, o.ref) for o in opened if o.coordinate is not None])

    # -------------------------------------------------------------- lifetime

    def flush(self) -> None:
        """Write out buffered audit events (they are also flushed at exit)."""
        self.observer.flush()

    def close(self) -> None:
        """Flush observers, stop the engine's threads and release the store."""
        self.observer.flush()
        self.pools.shutdown()
        self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _subscribers(guard: Guard, trace_file: str | None, extra: Iterable[Subscriber]) -> list[Subscriber]:
    subscribers: list[Subscriber] = list(extra)
    if guard.audit_log is not None:
        subscribers.append(AuditRecorder(guard.audit_log, guard.actor, inline=guard.config.audit_inline))
    # One log line per operation: the audit's, when it logs, says what the trace's would.
    logs_audit = guard.audit_log is not None and guard.audit_log.logs()
    subscribers.append(TraceRecorder(trace_file, log_lines=not logs_audit))
    return subscribers

