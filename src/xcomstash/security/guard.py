"""The security settings of an engine and the checks the engine runs on push and pull.

One place decides, for each value, what the deployment's rules say (:mod:`xcomstash.security.rules`),
whether and how to scan it (:mod:`xcomstash.security.sensitive`), who may read it
(:mod:`xcomstash.security.readers`), which keyset encrypts and signs it (:mod:`xcomstash.security.crypto`,
:mod:`xcomstash.security.signing`), and what the audit log records (:mod:`xcomstash.observe.audit`). The engine
calls these at fixed points of its pipeline; nothing here touches a store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from xcomstash.observe import audit
from xcomstash.security import signing
from xcomstash.security.readers import Actor, Expected, Readers
from xcomstash.coordinate import XComCoordinate
from xcomstash.security.crypto.keyset import KeyRing, Keyset
from xcomstash.security.crypto.stream import SCOPE_DAG, SCOPE_MODES
from xcomstash.errors import ConfigError, SensitiveDataError
from xcomstash.security.rules import Effective, Rules
from xcomstash.security.sensitive import MASK, OFF, REJECT, Scanner, enforce
from xcomstash.security.sensitive import log as sensitive_log

READERS_FIELD = "readers"


@dataclass(frozen=True)
class SecurityConfig:
    #: Keysets by DAG id pattern; ``None``: no keys (no encryption, no signing).
    keyring: KeyRing | None = None
    #: Encrypt offloaded objects (needs a keyring covering the DAG; otherwise the push fails).
    encrypt: bool = False
    #: What the encryption binds an object to: ``dag`` or ``run``.
    encryption_scope: str = SCOPE_DAG
    #: Sign references, and require a valid signature on every reference read.
    sign_references: bool = False
    #: While migrating to signed references: accept references that carry no MAC at all.
    accept_unsigned_references: bool = False
    rules: Rules = field(default_factory=Rules)
    scanner: Scanner = field(default_factory=Scanner, compare=False)
    #: Audit inline (small, in-database) pushes and pulls too, not only offloaded ones.
    audit_inline: bool = False

    def __post_init__(self) -> None:
        if self.encryption_scope not in SCOPE_MODES:
            raise ConfigError(f"encryption_scope must be one of {SCOPE_MODES}, got {self.encryption_scope!r}")
        if (self.encrypt or self.sign_references) and self.keyring is None:
            raise ConfigError(
                "encryption and signed references need keys: set [xcomstash] keysets "
                "(for example file:/path/to/keyset.json, created by 'xcomstash keys generate')"
            )

    @property
    def active(self) -> bool:
        """Whether pushes need the checked path (keys or rules); audit alone does not."""
        return self.encrypt or self.sign_references or self.rules.restricts


class Guard:
    """The security checks of one engine (cheap to call when nothing is configured)."""

    def __init__(
        self,
        config: SecurityConfig,
        audit_log: audit.AuditLog | None = None,
        actor: Callable[[], Actor | None] | None = None,
    ) -> None:
        self.config = config
        self.audit_log = audit_log
        self._actor = actor
        #: Decided once (asked on every push): whether pushes need the checked path.
        self.checks_push = config.active

    @property
    def audits_inline(self) -> bool:
        return self.audit_log is not None and self.config.audit_inline

    # ------------------------------------------------------------ helpers

    def actor(self) -> Actor | None:
        if self._actor is None:
            return None
        try:
            return self._actor()
        except Exception:
            return None

    def rules_for(self, dag_id: str) -> Effective:
        return self.config.rules.for_dag(dag_id)

    def keyset_for(self, dag_id: str) -> Keyset:
        assert self.config.keyring is not None
        return self.config.keyring.for_dag(dag_id)

    def encryption_keyset(self, coordinate: XComCoordinate) -> Keyset | None:
        """The keyset that encrypts this XCom's object, or None when encryption is off.
        KeyUnavailableError when encryption is on and no keyset covers the DAG: a value is
        never silently stored in plaintext."""
        return self.keyset_for(coordinate.dag_id) if self.config.encrypt else None

    # -------------------------------------------------------- sensitive data

    def screen_structure(self, eff: Effective, structure: Any, what: str) -> Any:
        """Scan a JSON structure per the DAG's policy: raise, mask, warn or pass through."""
        policy = eff.sensitive_data
        if policy == OFF:
            return structure
        scanner = self.config.scanner
        if policy == MASK:
            masked, findings, complete = scanner.mask_structure(structure)
        else:
            findings, complete = scanner.scan_structure(structure)
            masked = structure
        if not complete:
            sensitive_log.warning("xcomstash: %s is larger than the sensitive-data scan budget; scanned in part", what)
        enforce(policy, findings, what)
        return masked

    def screen_value(self, eff: Effective, value: Any, kind: str, what: str) -> Any:
        """Scan a codec value: ``table`` (pandas/polars/Arrow, sampled string columns),
        ``bytes`` (the first MiB), anything else is not scanned (numeric arrays)."""
        policy = eff.sensitive_data
        if policy == OFF or kind not in ("table", "bytes"):
            return value
        scanner = self.config.scanner
        if kind == "bytes":
            findings = scanner.scan_bytes(value)
            if findings and policy == MASK:
                raise SensitiveDataError(
                    f"{what} looks like it holds secrets ({', '.join(str(f) for f in findings[:5])}); "
                    "bytes cannot be masked, so policy mask rejects them",
                    rule="sensitive_data",
                )
            enforce(policy, findings, what)
            return value
        if policy == MASK:
            masked, findings = scanner.mask_table(value)
            enforce(policy, findings, what)
            return masked
        findings, _ = scanner.scan_table(value)
        enforce(policy, findings, what)
        return value

    # ------------------------------------------------------------ references

    def seal_reference(self, doc: dict[str, Any], readers: Readers | None, dag_id: str) -> dict[str, Any]:
        """Add the readers and the MAC to a reference about to go into an xcom row."""
        if readers is not None:
            doc[READERS_FIELD] = readers.to_json()
        if self.config.sign_references:
            doc[signing.MAC_FIELD] = signing.sign(self.keyset_for(dag_id), doc)
        return doc

    def open_reference(self, doc: dict[str, Any], producer_dag: str | None) -> str | None:
        """Verify a row's MAC before anything else; returns the key id that signed it."""
        if not self.config.sign_references:
            return None
        if signing.MAC_FIELD not in doc and self.config.accept_unsigned_references:
            return None
        if producer_dag is None:
            from xcomstash.errors import ReferenceSignatureError

            raise ReferenceSignatureError("reference names no producing XCom, so its MAC cannot be checked")
        return signing.verify(self.keyset_for(producer_dag), doc)

    @staticmethod
    def check_reader(
        readers: Readers | None, written_for: XComCoordinate | None, expected: Expected | None, actor: Actor | None, what: str
    ) -> None:
        if expected is not None:
            expected.check(written_for, what)
        if readers is not None:
            readers.check(actor, what)

    # ------------------------------------------------------------------ audit

    def record(
        self,
        op: str,
        outcome: str,
        xcom: XComCoordinate | dict[str, Any] | None,
        *,
        route: str = "stored",
        uri: str = "",
        size: int | None = None,
        digest: str = "",
        key_id: str = "",
        error: BaseException | None = None,
    ) -> None:
        if self.audit_log is None or (route == "inline" and not self.config.audit_inline and outcome == audit.OK):
            return
        actor = self.actor()
        if actor is None and op == "push" and isinstance(xcom, XComCoordinate):
            # Airflow pushes a task's return value after leaving the task's context; only the
            # task instance itself pushes to its coordinate (the try number is then unknown).
            actor = Actor(xcom.dag_id, xcom.run_id, xcom.task_id, xcom.map_index)
        self.audit_log.record(
            audit.AuditEvent(
                op=op,
                outcome=outcome,
                xcom=xcom.as_dict() if isinstance(xcom, XComCoordinate) else dict(xcom or {}),
                actor=actor.as_dict() if actor else {},
                route=route,
                uri=uri,
                size=size,
                digest=digest,
                key_id=key_id,
                error=audit.describe_error(error) if error is not None else "",
            )
        )

    def flush(self) -> None:
        if self.audit_log is not None:
            self.audit_log.flush()


def outcome_of(exc: BaseException) -> str:
    """The audit outcome an exception stands for."""
    from xcomstash.errors import AccessDeniedError, PolicyViolationError, ReferenceSignatureError

    if isinstance(exc, (AccessDeniedError, ReferenceSignatureError)):
        return audit.DENIED
    if isinstance(exc, PolicyViolationError):
        return audit.REJECTED
    return audit.FAILED


__all__ = ["Guard", "SecurityConfig", "outcome_of", "REJECT"]
