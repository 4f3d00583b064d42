"""The audit log: one structured event per push, pull, purge, access denial, policy rejection
and integrity failure, saying who did what to which XCom, when, and how it ended.

Every event goes to two sinks:

- **logging** (logger ``xcomstash.observe.audit``): inside a task this is the task log, through
  Airflow's logging; the event is also attached to the record as ``record.xcomstash_audit``;
- **the store** (durable, survives the worker): events are buffered and written as JSON-lines
  objects under ``!audit/<YYYY-MM-DD>/`` at the store root. A buffer is flushed when it holds
  ``flush_events`` events, when ``flush_seconds`` have passed since its first event, at process
  exit, and *at once* for every event that is not a plain success (denials, rejections,
  integrity failures), so the events that matter most are on storage before the task fails.
  (``!`` cannot start a percent-encoded DAG id, so the prefix never collides with values.)

Events never carry values or secrets: only coordinates, sizes, digests, key ids and error
types/messages (which name detectors and rules, never matched text).

**Tamper evidence.** Every process that writes the log (a *writer*) keeps a hash chain over
what it writes. Each object starts with a header line (writer id, object number ``seq`` from 1,
number of events, the chain value of the writer's previous object, ``final`` on the object
written at exit, the key id) and every line carries ``mac``: HMAC-SHA256 over the previous
line's ``mac`` and the line, the header's over the object's key and the header (so an object
cannot be renamed either). The HMAC key is the ``audit-chain`` HKDF subkey of the primary key
of the first keyset in ``[xcomstash] keysets``; without keysets it is a plain SHA-256 chain,
which catches accidents but not someone who recomputes it. :func:`verify_log` (``xcomstash
audit --verify``) finds edited, inserted, reordered or dropped lines, truncated objects,
renamed objects, a writer's deleted objects (a gap in ``seq``, a wrong ``prev``), and a
writer's deleted *last* objects when it had closed its chain at exit (an open chain is
reported). What it cannot find: every object of one writer deleted together, and (without
keys, or by a holder of the key) a consistently rewritten chain.

``xcomstash audit`` (:mod:`xcomstash.commands.audit`) queries the store sink by DAG, run,
task, key, operation, outcome and time range.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator, Protocol

from xcomstash.observe.events import STORED
from xcomstash.observe.trace import describe

log = logging.getLogger("xcomstash.observe.audit")

PREFIX = "!audit"
OPS = ("push", "pull", "preview", "get", "purge", "rewrap", "reencrypt", "repair", "move")
OK, DENIED, REJECTED, FAILED = "ok", "denied", "rejected", "failed"
OUTCOMES = (OK, DENIED, REJECTED, FAILED)
_MAX_ERROR_CHARS = 500


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@functools.cache
def _host() -> str:
    """This machine's name, asked once: the system call releases the GIL, and a fan-in's
    thread recording events waited for it back behind the threads reading values."""
    return socket.gethostname()


@dataclass(frozen=True)
class AuditEvent:
    op: str
    outcome: str
    #: The XCom acted on: dag_id, run_id, task_id, map_index, key.
    xcom: dict[str, Any]
    #: Who acted: the task instance running this code (dag_id, run_id, task_id, map_index,
    #: try_number), when known; for a pull it may differ from ``xcom`` (cross-task, cross-DAG).
    actor: dict[str, Any] = field(default_factory=dict)
    route: str = ""  # inline | stored | link
    uri: str = ""
    size: int | None = None
    digest: str = ""
    key_id: str = ""
    error: str = ""  # "ErrorType: message" for outcomes other than ok
    #: For a pull: where the bytes came from (``replica:1``, ``cache``), and the sources that
    #: failed before it (``"replica:0: ObjectMissingError"``).
    source: str = ""
    failover: list[str] = field(default_factory=list)
    #: For a refused reference: the XCom the row *claimed* to hold, when it is not the XCom
    #: asked for (``xcom``, under which the event is filed and queried).
    claimed: dict[str, Any] = field(default_factory=dict)
    #: For the log line only, never recorded: what the stored value is, its size, the time
    #: taken (the trace's description), so one line per operation says all of it.
    detail: str = field(default="", compare=False)
    ts: str = field(default_factory=now_iso)
    host: str = field(default_factory=_host)
    pid: int = field(default_factory=os.getpid)

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set (a shallow dict: every event is logged, and ``asdict``'s
        deep copy of it cost more than the log line)."""
        return {
            k: v for k in self.__dataclass_fields__ if k != "detail" and (v := getattr(self, k)) not in ("", None, {})
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> AuditEvent:
        known = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
        known.setdefault("xcom", {})
        return cls(**known)


def describe_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


class Sink(Protocol):
    def write(self, event: AuditEvent) -> None: ...
    def flush(self) -> None: ...


class LoggingSink:
    def write(self, event: AuditEvent) -> None:
        x = event.xcom
        level = logging.INFO if event.outcome == OK else logging.WARNING
        log.log(
            level,
            "xcomstash audit: %s %s dag_id=%s run_id=%s task_id=%s map_index=%s key=%s%s%s%s%s",
            event.op, event.outcome, x.get("dag_id"), x.get("run_id"), x.get("task_id"),
            x.get("map_index"), x.get("key"),
            f" uri={event.uri}" if event.uri else "",
            f" key_id={event.key_id}" if event.key_id else "",
            f" error={event.error}" if event.error else "",
            f" ({event.detail})" if event.detail else "",
            extra={"xcomstash_audit": event.to_dict()},
        )

    def flush(self) -> None:
        pass


#: Chain algorithms: keyed (a keyset is configured) and plain.
CHAIN_HMAC, CHAIN_SHA256 = "hmac-sha256", "sha256"
_CHAIN_DOMAIN = b"xcomstash-audit-chain-v1\n"


def _chain(key: bytes | None, previous: bytes, text: str) -> str:
    data = previous + b"\n" + text.encode()
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _with_mac(text: str, mac: str) -> str:
    """A JSON object line with ``"mac"`` appended as its last member (undone textually by
    :func:`_split_mac`, so verification never depends on re-serialising JSON)."""
    return f'{text[:-1]},"mac":"{mac}"}}' if text != "{}" else f'{{"mac":"{mac}"}}'


def _split_mac(line: str) -> tuple[str, str] | None:
    tail = len(',"mac":"') + 64 + len('"}')
    if len(line) < tail or not line.endswith('"}') or line[-tail:-66] != ',"mac":"':
        return None
    return line[:-tail] + "}", line[-66:-2]


class StoreSink:
    """Buffered JSON-lines objects in a store (see the module docstring for when it flushes),
    each a link in this writer's hash chain.

    ``chain_key``: ``(key id, HMAC key)`` keying the chain; ``None`` for a plain SHA-256 chain.
    """

    def __init__(
        self,
        store: Any,
        *,
        flush_events: int = 200,
        flush_seconds: float = 5.0,
        chain_key: tuple[str, bytes] | None = None,
        flush_wait: float = 5.0,
    ) -> None:
        self.store = store
        self.flush_events = flush_events
        self.flush_seconds = flush_seconds
        #: How long a flush waits for the store before the caller goes on (the write goes on
        #: in the background): a hung store must not hold a task past its push deadline.
        self.flush_wait = flush_wait
        self.chain_key = chain_key
        self.writer = f"{_safe(socket.gethostname())}-{os.getpid()}-{secrets.token_hex(4)}"
        self._lines: list[str] = []
        self._first: float | None = None
        self._lock = threading.Lock()
        #: Held while an object is chained and written, so objects go out in chain order.
        self._write_lock = threading.Lock()
        self._seq = 0
        self._prev = ""
        atexit.register(self._flush_quietly)

    def write(self, event: AuditEvent) -> None:
        with self._lock:
            self._lines.append(event.to_json())
            if self._first is None:
                self._first = time.monotonic()
            due = (
                event.outcome != OK
                or len(self._lines) >= self.flush_events
                or time.monotonic() - self._first >= self.flush_seconds
            )
        if due:
            self.flush()

    def flush(self, *, final: bool = False) -> None:
        """Write the buffered events as the next object of the chain, waiting at most
        :attr:`flush_wait` for the store (a daemon thread carries on after that, so a hung
        store delays neither the task nor the process exit). ``final`` (at exit) closes the
        chain, with an object of no events if need be, so that deleting this writer's last
        objects shows as an open chain."""
        writer = threading.Thread(
            target=self._write_out, kwargs={"final": final}, name="xcomstash-audit", daemon=True
        )
        writer.start()
        writer.join(self.flush_wait)
        if writer.is_alive():
            log.warning(
                "xcomstash audit: the store has not taken the audit events within %g s; still trying in the background",
                self.flush_wait,
            )

    def _write_out(self, *, final: bool = False) -> None:
        with self._write_lock:
            with self._lock:
                lines, self._lines, self._first = self._lines, [], None
            if not lines and not (final and self._seq):
                return
            self._seq += 1
            seq = self._seq
            stamp = datetime.now(timezone.utc)
            key = f"{PREFIX}/{stamp:%Y-%m-%d}/{stamp:%H%M%S.%f}-{self.writer}-{seq}.jsonl"
            data = self._chained(key, seq, lines, final)
            try:
                with self.store.writer(key) as sink:
                    sink.write(data)
            except Exception as exc:  # never fail a task because the audit sink is down; say so loudly
                if not lines:  # only the closing object (at exit): its absence shows as an open chain
                    log.debug("xcomstash audit: could not close the chain at %s: %s", key, exc)
                    return
                log.error("xcomstash audit: could not write %d events to %s: %s", len(lines), key, exc)
                for line in lines:
                    log.error("xcomstash audit (unsaved): %s", line)

    def _chained(self, key: str, seq: int, lines: list[str], final: bool) -> bytes:
        key_id, secret = self.chain_key if self.chain_key is not None else ("", None)
        header = json.dumps(
            {
                "chain": {
                    "v": 1,
                    "alg": CHAIN_HMAC if secret is not None else CHAIN_SHA256,
                    "key_id": key_id,
                    "writer": self.writer,
                    "seq": seq,
                    "prev": self._prev,
                    "events": len(lines),
                    "final": final,
                }
            }
        )
        mac = _chain(secret, _CHAIN_DOMAIN + key.encode(), header)
        out = [_with_mac(header, mac)]
        for line in lines:
            mac = _chain(secret, mac.encode(), line)
            out.append(_with_mac(line, mac))
        self._prev = mac
        return ("\n".join(out) + "\n").encode()

    def _flush_quietly(self) -> None:
        try:
            self.flush(final=True)
        except Exception:  # at interpreter exit
            pass


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:60] or "host"


class AuditLog:
    """Fans events out to its sinks; a sink failure is logged, never raised into a task."""

    def __init__(self, sinks: Iterable[Sink]) -> None:
        self.sinks = tuple(sinks)

    def logs(self) -> bool:
        """Whether events go to the log (then the trace does not log stored values again)."""
        return any(isinstance(sink, LoggingSink) for sink in self.sinks)

    def record(self, event: AuditEvent) -> None:
        for sink in self.sinks:
            try:
                sink.write(event)
            except Exception as exc:
                log.error("xcomstash audit sink %s failed: %s", type(sink).__name__, exc)

    def flush(self) -> None:
        for sink in self.sinks:
            try:
                sink.flush()
            except Exception as exc:
                log.error("xcomstash audit sink %s failed to flush: %s", type(sink).__name__, exc)


class AuditRecorder:
    """Subscribes the audit log to the engine's events: who did what to which XCom, and how
    it ended. Successful inline operations are recorded only with ``audit_inline``; refusals
    and failures always are."""

    def __init__(self, audit_log: AuditLog, actor: Callable[[], Any] | None = None, *, inline: bool = False) -> None:
        self.audit_log = audit_log
        self._actor = actor
        self.wants_inline = inline

    def __call__(self, event: Any) -> None:
        if event.route == "inline" and event.outcome == OK and not self.wants_inline:
            return
        actor = getattr(event, "actor", None) or _call_quietly(self._actor)
        xcom = event.xcom_dict()
        if actor is None and event.op == "push" and "task_id" in xcom:
            # Airflow pushes a task's return value after leaving the task's context; only the
            # task instance itself pushes to its coordinate (the try number is then unknown).
            actor = {k: xcom[k] for k in ("dag_id", "run_id", "task_id", "map_index")}
            actor["try_number"] = None
        self.audit_log.record(
            AuditEvent(
                op=event.op,
                outcome=event.outcome,
                xcom=xcom,
                actor=actor if isinstance(actor, dict) else (actor.as_dict() if actor is not None else {}),
                route=event.route,
                uri=event.uri,
                size=event.size,
                digest=event.digest,
                key_id=event.key_id,
                error=describe_error(event.error) if event.error is not None else "",
                source=event.source,
                failover=list(event.failover),
                claimed=getattr(event, "claimed", None) or {},
                detail=describe(event.summary, event.size or 0, event.seconds)
                if event.outcome == OK and event.route == STORED
                else "",
            )
        )

    def flush(self) -> None:
        self.audit_log.flush()


def _call_quietly(actor: Callable[[], Any] | None) -> Any:
    if actor is None:
        return None
    try:
        return actor()
    except Exception:
        return None


# ------------------------------------------------------------------- query


@dataclass(frozen=True)
class Query:
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    key: str | None = None
    op: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, event: AuditEvent) -> bool:
        x = event.xcom
        for name in ("dag_id", "run_id", "task_id", "key"):
            wanted = getattr(self, name)
            if wanted is not None and x.get(name) != wanted:
                return False
        if self.op is not None and event.op != self.op:
            return False
        if self.outcome is not None and event.outcome != self.outcome:
            return False
        if self.since is not None or self.until is not None:
            when = parse_time(event.ts)
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when > self.until:
                return False
        return True


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """ISO 8601 (``2026-11-23``, ``2026-11-23T14:00:00Z``) or relative (``30m``, ``2h``, ``7d``)."""
    text = text.strip()
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    if text[:-1].isdigit() and text[-1:] in units:
        return (now or datetime.now(timezone.utc)) - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use ISO 8601 or 30m / 2h / 7d)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _days(query: Query) -> list[str] | None:
    """Day partitions to list, or None for all (no lower bound)."""
    if query.since is None:
        return None
    end = (query.until or datetime.now(timezone.utc)).astimezone(timezone.utc).date()
    day = query.since.astimezone(timezone.utc).date()
    out = []
    while day <= end and len(out) <= 3660:
        out.append(day.isoformat())
        day += timedelta(days=1)
    return out


def read_events(store: Any, query: Query = Query()) -> Iterator[AuditEvent]:
    """Events in the store matching ``query``, oldest first (by object name, then line)."""
    days = _days(query)
    prefixes = [f"{PREFIX}/{d}" for d in days] if days is not None else [PREFIX]
    keys: list[str] = []
    for prefix in prefixes:
        keys.extend(info.key for info in store.list(prefix) if info.key.endswith(".jsonl"))
    for key in sorted(keys):
        try:
            text = store.get(key).decode("utf-8", "replace")
        except Exception as exc:  # e.g. deleted between list and get
            log.warning("xcomstash audit: cannot read %s: %s", key, exc)
            continue
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                if "chain" in doc and "op" not in doc:
                    continue  # an object's chain header
                event = AuditEvent.from_dict(doc)
            except (ValueError, TypeError):
                log.warning("xcomstash audit: skipping a malformed line in %s", key)
                continue
            if query.matches(event):
                yield event


# ------------------------------------------------------------------ verify


@dataclass
class ChainReport:
    """What :func:`verify_log` found. ``problems`` are signs of tampering (or damage)."""

    objects: int = 0
    events: int = 0
    writers: int = 0
    problems: list[str] = field(default_factory=list)
    #: Writers whose newest object is not marked final: still running, killed, or their
    #: last objects were deleted (which cannot be told apart).
    open_chains: list[str] = field(default_factory=list)
    #: Objects without a chain (written by an xcomstash that did not chain the log).
    unchained: list[str] = field(default_factory=list)
    #: Objects under a key id none of the verifier's keysets holds (not checked).
    unverifiable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def verify_log(store: Any, key_for: Callable[[str], bytes | None] | None = None, *, require_keyed: bool = False) -> ChainReport:
    """Check every object under ``!audit/``: each object's chain, and each writer's sequence
    of objects. ``key_for(key_id)``: the HMAC key of a key id (``None`` if not held).
    ``require_keyed``: an object chained without a key is a problem (where keysets are
    configured, a plain chain is what someone without the key would write)."""
    report = ChainReport()
    keys = sorted(info.key for info in store.list(PREFIX) if info.key.endswith(".jsonl"))
    writers: dict[str, list[tuple[int, str, str, str, bool]]] = {}  # writer -> (seq, key, prev, last mac, final)
    for key in keys:
        report.objects += 1
        try:
            text = store.get(key).decode("utf-8")
        except Exception as exc:
            report.problems.append(f"{key}: cannot be read: {exc}")
            continue
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        else:
            report.problems.append(f"{key}: does not end with a newline (truncated)")
        header = _split_mac(lines[0]) if lines else None
        try:
            chain = json.loads(header[0]).get("chain") if header is not None else None
        except ValueError:
            chain = None
        if not isinstance(chain, dict):
            if lines and all(_split_mac(line) is None for line in lines):
                report.unchained.append(key)
                if require_keyed:
                    report.problems.append(f"{key}: has no chain (written without keys, or replaced)")
            else:
                report.problems.append(f"{key}: its chain header is missing or damaged")
            continue
        alg, key_id = chain.get("alg"), str(chain.get("key_id") or "")
        secret: bytes | None = None
        if alg == CHAIN_HMAC:
            secret = key_for(key_id) if key_for is not None else None
            if secret is None:
                report.unverifiable.append(key)
                continue
        elif alg == CHAIN_SHA256:
            if require_keyed:
                report.problems.append(f"{key}: chained without a key where keys are configured")
        else:
            report.problems.append(f"{key}: unknown chain algorithm {alg!r}")
            continue
        mac = _chain(secret, _CHAIN_DOMAIN + key.encode(), header[0])  # type: ignore[index]
        if not hmac.compare_digest(mac, header[1]):  # type: ignore[index]
            report.problems.append(f"{key}: header edited, or the object renamed")
            continue
        broken = False
        for number, line in enumerate(lines[1:], start=1):
            parts = _split_mac(line)
            if parts is None:
                report.problems.append(f"{key}: line {number + 1} carries no chain value (inserted or edited)")
                broken = True
                break
            mac = _chain(secret, mac.encode(), parts[0])
            if not hmac.compare_digest(mac, parts[1]):
                report.problems.append(f"{key}: line {number + 1} edited, inserted, reordered or removed")
                broken = True
                break
        if broken:
            continue
        if len(lines) - 1 != chain.get("events"):
            report.problems.append(
                f"{key}: holds {len(lines) - 1} events, its header says {chain.get('events')} (truncated)"
            )
            continue
        report.events += len(lines) - 1
        writers.setdefault(str(chain.get("writer")), []).append(
            (int(chain.get("seq") or 0), key, str(chain.get("prev") or ""), mac, bool(chain.get("final")))
        )
    report.writers = len(writers)
    for writer, objects in sorted(writers.items()):
        objects.sort()
        expected_seq, prev = 1, ""
        for seq, key, claimed_prev, last_mac, _ in objects:
            if seq != expected_seq:
                report.problems.append(
                    f"writer {writer}: object {expected_seq}" + (f" to {seq - 1}" if seq - 1 > expected_seq else "")
                    + f" missing before {key} (deleted)"
                )
            elif claimed_prev != prev:
                report.problems.append(f"writer {writer}: {key} does not follow its predecessor (replaced)")
            expected_seq, prev = seq + 1, last_mac
        if not objects[-1][4]:
            report.open_chains.append(f"writer {writer}: newest object {objects[-1][1]} is not the final one")
    return report
