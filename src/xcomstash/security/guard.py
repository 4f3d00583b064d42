"""The security settings of an engine and the checks the engine runs on push and pull.

One place decides, for each value, what the deployment's rules say (:mod:`xcomstash.security.rules`),
whether and how to scan it (:mod:`xcomstash.security.sensitive`), who may read it
(:mod:`xcomstash.security.readers`), which keyset encrypts and signs it (:mod:`xcomstash.security.crypto`,
:mod:`xcomstash.security.signing`). The pipeline calls these at fixed stages of every push
and pull; nothing here touches a store. (What happened is recorded by :mod:`xcomstash.observe`.)
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from xcomstash.security import signing
from xcomstash.format.container import ObjectLayout
from xcomstash.security.readers import Actor, Expected, Readers, Restricted, readers_for
from xcomstash.coordinate import XComCoordinate
from xcomstash.security.crypto.keyset import KeyRing, Keyset
from xcomstash.security.crypto.stream import SCOPE_DAG, SCOPE_MODES, Envelope, FrameCipher, open_object, seal_object
from xcomstash.errors import (
    ConfigError,
    DecryptionError,
    KeyUnavailableError,
    ReferenceSignatureError,
    SensitiveDataError,
)
from xcomstash.security.rules import Effective, Rules
from xcomstash.security.sensitive import MASK, OFF, REJECT, Scanner, enforce
from xcomstash.security.sensitive import log as sensitive_log

if TYPE_CHECKING:
    from xcomstash.observe.audit import AuditLog

READERS_FIELD = "readers"
#: What :meth:`Guard.open_reference` returns for a reference accepted without a MAC.
UNSIGNED = "unsigned"


class Admission:
    """What the guard decided about a value at the start of a push. (A slotted class, not a
    dataclass: one is made per push, and this is on the small-value path.)"""

    __slots__ = ("value", "rules", "readers", "screens")

    def __init__(self, value: Any, rules: Effective, readers: Readers | None, screens: bool) -> None:
        self.value = value  # unwrapped from :class:`Restricted`
        self.rules = rules
        self.readers = readers
        #: Whether the value must be scanned or measured against a size limit (no fast path).
        self.screens = screens


@dataclass(frozen=True)
class SecurityConfig:
    #: Keysets by DAG id pattern; ``None``: no keys (no encryption, no signing).
    keyring: KeyRing | None = None
    #: Encrypt offloaded objects (needs a keyring covering the DAG; otherwise the push fails).
    encrypt: bool = False
    #: What the encryption binds an object to: ``dag`` or ``run``.
    encryption_scope: str = SCOPE_DAG
    #: DAG id patterns whose encrypted values are still compressed (default: none; see
    #: :mod:`xcomstash.pipeline.place` for why encrypted values are not compressed).
    compress_encrypted: tuple[str, ...] = ()
    #: With encryption on, still read objects stored in plaintext (written before encryption
    #: was switched on). Off: a plaintext object behind a reference is refused.
    accept_plaintext_objects: bool = False
    #: Sign references, and require a valid signature on every reference read.
    sign_references: bool = False
    #: While switching signing on (POSIX seconds): still read references without a MAC, in
    #: the one shape written before signing (no ``xcom``, no ``readers``, a plaintext object
    #: last modified before this time). ``None``: every reference must be signed.
    unsigned_before: float | None = None
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
        if self.encrypt and self.unsigned_before is not None:
            raise ConfigError(
                "accept_unsigned_references cannot be combined with encrypt = true: unsigned "
                "references are accepted only for plaintext objects written before signing"
            )
        if self.unsigned_before is not None and not self.sign_references:
            raise ConfigError("accept_unsigned_references only applies when sign_references is on")

    @property
    def active(self) -> bool:
        """Whether pushes need the checked path (keys or rules); audit alone does not."""
        return self.encrypt or self.sign_references or self.rules.restricts


class Guard:
    """The security checks of one engine (cheap to call when nothing is configured)."""

    def __init__(
        self,
        config: SecurityConfig,
        audit_log: AuditLog | None = None,
        actor: Callable[[], Actor | None] | None = None,
    ) -> None:
        self.config = config
        self.audit_log = audit_log
        self._actor = actor
        #: Decided once (asked on every push): whether pushes need rule checks at all.
        self.checks_push = config.active
        self._rules: dict[str, Effective] = {}

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

    # ---------------------------------------------------------------- admit

    def admit(self, value: Any, coordinate: XComCoordinate) -> Admission:
        """The rules that apply to a value about to be pushed, and who may read it. With no
        rules and no :class:`Restricted` wrapper this is one dictionary lookup."""
        rules = self._rules.get(coordinate.dag_id)
        if rules is None:
            rules = self._rules[coordinate.dag_id] = self.config.rules.for_dag(coordinate.dag_id)
        if not self.checks_push and not isinstance(value, Restricted):
            return Admission(value, rules, None, False)
        value, readers = readers_for(value, coordinate, rules.read_scope)
        return Admission(value, rules, readers, rules.sensitive_data != OFF or bool(rules.max_value_bytes))

    def admit_read(
        self, readers: Readers | None, written_for: XComCoordinate | None, expected: Expected | None, what: str
    ) -> None:
        """A reference may be read here: it was written for the XCom the reader asked for
        (not copied into another row), and the running task is one of its readers."""
        if expected is not None:
            expected.check(written_for, what)
        if readers is not None:
            readers.check(self.actor(), what)

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
        """Verify a row's MAC before anything else; returns the key id that signed it, or
        :data:`UNSIGNED` for a reference accepted unsigned while switching signing on (the
        caller must then check its object with :meth:`admit_unsigned_object`)."""
        if not self.config.sign_references:
            return None
        if signing.MAC_FIELD not in doc and self.config.unsigned_before is not None:
            # Whatever the row claims (its ``xcom``, its ``readers`` or their absence), what
            # binds is the object's age: see :meth:`admit_unsigned_object`.
            return UNSIGNED
        if producer_dag is None:
            raise ReferenceSignatureError("reference names no producing XCom, so its MAC cannot be checked")
        return signing.verify(self.keyset_for(producer_dag), doc)

    def admit_unsigned_object(self, modified: float | None, uri: str) -> None:
        """An object read through an unsigned reference must predate signing. Every object
        written since was referenced with a MAC, so a reference to it without one had its MAC
        (and with it its readers or its XCom) stripped; and an object planted in the store
        since then is not read either."""
        cutoff = self.config.unsigned_before
        assert cutoff is not None
        if modified is None or modified >= cutoff:
            raise ReferenceSignatureError(
                f"unsigned reference to {uri}: the object was written after signing was switched "
                "on (accept_unsigned_references only covers objects older than that), so the "
                "reference must carry a MAC"
            )

    # ------------------------------------------------------------- encryption

    def sealer(self, coordinate: XComCoordinate) -> Envelope | None:
        """A fresh envelope for this XCom's object, or None when encryption is off.
        KeyUnavailableError when encryption is on and no keyset covers the DAG: a value is
        never silently stored in plaintext."""
        if not self.config.encrypt:
            return None
        self.keyset_for(coordinate.dag_id)  # fail before anything is written
        return Envelope.new(self.config.encryption_scope)

    def compresses_encrypted(self, dag_id: str) -> bool:
        """Whether this DAG opted in to compressing its encrypted values (``compress_encrypted``)."""
        return any(fnmatch.fnmatchcase(dag_id, pattern) for pattern in self.config.compress_encrypted)

    @property
    def refuses_plaintext(self) -> bool:
        """With encryption on, every object must be encrypted: a plaintext one was not written
        by a worker of this deployment (or predates encryption: ``accept_plaintext_objects``)."""
        return self.config.encrypt and not self.config.accept_plaintext_objects

    def seal(self, envelope: Envelope, header_bytes: bytes, coordinate: XComCoordinate) -> tuple[bytes, FrameCipher]:
        """The key slot and frame cipher of a new encrypted object of this XCom."""
        return seal_object(
            self.keyset_for(coordinate.dag_id), envelope, header_bytes, coordinate.dag_id, coordinate.run_id
        )

    def opener(self, layout: ObjectLayout, scope: tuple[str, str] | None) -> FrameCipher:
        """The frame cipher of an encrypted object, for the DAG run the reader expects."""
        keyring = self.config.keyring
        if keyring is None:
            raise KeyUnavailableError("the object is encrypted and this worker has no keysets ([xcomstash] keysets)")
        if scope is None:
            raise DecryptionError("the object is encrypted but the XCom it belongs to is unknown")
        assert layout.header.encryption is not None and layout.key_slot is not None
        dag_id, run_id = scope
        envelope = Envelope.from_header(layout.header.encryption)
        return open_object(keyring.for_dag(dag_id), envelope, layout.header_bytes, layout.key_slot, dag_id, run_id)


#: The guard of an engine with nothing configured: no keys, no rules; it still refuses to
#: hand a value with restricted readers to code that is not running as an allowed task.
def open_guard() -> Guard:
    return Guard(SecurityConfig())


__all__ = ["Admission", "Guard", "SecurityConfig", "open_guard", "REJECT"]
