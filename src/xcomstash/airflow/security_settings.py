"""The Airflow side of security: keysets from Airflow Variables (and so from any configured
secrets backend), Airflow's secrets masker as a sensitive-data source, the running task as the
audit actor and reader identity, and the ``[xcomstash]`` security options."""

from __future__ import annotations

import logging
from typing import Any, Callable, Pattern

from xcomstash.observe import audit
from xcomstash.security.readers import Actor
from xcomstash.security.crypto.keyset import load_keyring
from xcomstash.errors import ConfigError
from xcomstash.security.rules import Rules, ValueRule, parse_dag_policies, parse_types
from xcomstash.security.guard import Guard, SecurityConfig
from xcomstash.security.sensitive import SENSITIVE_FIELD_NAMES, Scanner, validate_policy

log = logging.getLogger("xcomstash")

SECTION = "xcomstash"


def variable_source(name: str) -> str:
    """``variable:NAME``: an Airflow Variable, so secrets backends (Vault, AWS Secrets
    Manager, ...) configured for Airflow are consulted like for any Variable."""
    from airflow.sdk import Variable

    try:
        value = Variable.get(name)
    except Exception as exc:
        raise ConfigError(f"keyset source variable:{name}: {type(exc).__name__}: {exc}") from None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"keyset source variable:{name}: the Variable is empty")
    return value


def masker_pattern() -> Pattern[str] | None:
    """The pattern of everything Airflow's secrets masker currently hides in this process."""
    from airflow.sdk._shared.secrets_masker import _secrets_masker

    return _secrets_masker().replacer


def masker_fields() -> frozenset[str]:
    try:
        from airflow.sdk._shared.secrets_masker import _secrets_masker

        fields = _secrets_masker().sensitive_variables_fields
        return frozenset(fields) | SENSITIVE_FIELD_NAMES
    except Exception:
        return SENSITIVE_FIELD_NAMES


def current_actor() -> Actor | None:
    """The task instance running this code, if any."""
    from airflow.sdk.definitions._internal.contextmanager import _CURRENT_CONTEXT

    if not _CURRENT_CONTEXT:
        return None
    ti = _CURRENT_CONTEXT[-1].get("ti")
    if ti is None:
        return None
    map_index = getattr(ti, "map_index", -1)
    return Actor(
        dag_id=str(ti.dag_id),
        run_id=str(ti.run_id),
        task_id=str(ti.task_id),
        map_index=-1 if map_index is None else int(map_index),
        try_number=getattr(ti, "try_number", None),
    )


def _tristate(conf: Any, option: str) -> bool | None:
    raw = (conf.get(SECTION, option, fallback="auto") or "auto").strip().lower()
    if raw == "auto":
        return None
    if raw in ("true", "1", "yes", "on"):
        return True
    if raw in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"[xcomstash] {option} must be auto, true or false, got {raw!r}")


def read_security(conf: Any, resolvers: dict[str, Callable[[str], str]] | None = None) -> SecurityConfig:
    keyring = load_keyring(conf.get(SECTION, "keysets", fallback="") or "", resolvers or {"variable": variable_source})
    encrypt = _tristate(conf, "encrypt")
    sign = _tristate(conf, "sign_references")
    default = ValueRule(
        allowed_types=parse_types(conf.get(SECTION, "allowed_types", fallback="") or ""),
        max_value_bytes=conf.getint(SECTION, "max_value_bytes", fallback=0) or None,
        sensitive_data=validate_policy((conf.get(SECTION, "sensitive_data", fallback="off") or "off").strip().lower()),
        read_scope=(conf.get(SECTION, "read_scope", fallback="any") or "any").strip().lower(),
    )
    return SecurityConfig(
        keyring=keyring,
        encrypt=keyring is not None if encrypt is None else encrypt,
        encryption_scope=(conf.get(SECTION, "encryption_scope", fallback="dag") or "dag").strip().lower(),
        sign_references=keyring is not None if sign is None else sign,
        accept_unsigned_references=conf.getboolean(SECTION, "accept_unsigned_references", fallback=False),
        rules=Rules(default, parse_dag_policies(conf.get(SECTION, "dag_policies", fallback="") or "")),
        scanner=Scanner(registered=masker_pattern, sensitive_fields=masker_fields()),
        audit_inline=conf.getboolean(SECTION, "audit_inline", fallback=False),
    )


def audit_sinks(conf: Any, store: Any, *, secured: bool, keyring: Any = None) -> audit.AuditLog | None:
    """``auto`` (default): the task log always, plus the durable store sink when keysets are
    configured; or an explicit list of ``log``, ``store``; or ``off``. The store sink's hash
    chain is keyed by the first keyset of ``keyring`` (see :func:`audit_chain_key`)."""
    raw = (conf.get(SECTION, "audit", fallback="auto") or "auto").strip().lower()
    if raw == "auto":
        raw = "log,store" if secured else "log"
    names = {n.strip() for n in raw.split(",") if n.strip()} - {"off", "none"}
    unknown = names - {"log", "store"}
    if unknown:
        raise ConfigError(f"[xcomstash] audit takes log, store or off; got {sorted(unknown)}")
    sinks: list[Any] = []
    if "log" in names:
        sinks.append(audit.LoggingSink())
    if "store" in names:
        sinks.append(audit.StoreSink(store, chain_key=audit_chain_key(keyring)))
    return audit.AuditLog(sinks) if sinks else None


def audit_chain_key(keyring: Any) -> tuple[str, bytes] | None:
    """``(key id, HMAC key)`` of the audit log's hash chain: the ``audit-chain`` subkey of the
    primary key of the first configured keyset (``None`` without keysets)."""
    from xcomstash.security.crypto.keyset import PURPOSE_AUDIT

    if keyring is None:
        return None
    first = next(iter(keyring.keysets()), None)
    if first is None:
        return None
    return first.primary.id, first.primary.subkey(PURPOSE_AUDIT)


def audit_key_lookup(keyring: Any) -> Any:
    """``key_id -> HMAC key`` over every key of every keyset (``None`` for an unknown id), for
    :func:`xcomstash.observe.audit.verify_log`."""
    from xcomstash.security.crypto.keyset import PURPOSE_AUDIT

    def lookup(key_id: str) -> bytes | None:
        for keyset in keyring.keysets() if keyring is not None else ():
            if key_id in keyset.ids:
                return keyset.get(key_id).subkey(PURPOSE_AUDIT)
        return None

    return lookup


def build_guard(conf: Any, store: Any) -> Guard:
    """The engine's guard (always one in Airflow: restricted readers are checked even when
    nothing else is configured)."""
    security = read_security(conf)
    sinks = audit_sinks(conf, store, secured=security.keyring is not None, keyring=security.keyring)
    return Guard(security, sinks, current_actor)
