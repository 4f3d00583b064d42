"""The Airflow side of security: keysets from Airflow Variables (and so from any configured
secrets backend), Airflow's secrets masker as a sensitive-data source, the running task as the
audit actor and reader identity, and the ``[xcomstash]`` security options."""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from typing import Any, Callable, Pattern

from xcomstash.observe import audit
from xcomstash.security.readers import Actor
from xcomstash.security.crypto.keyset import KeyRing, load_keyring, provision_keyset_file
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


def _masker() -> Any:
    """Airflow's secrets masker of this process."""
    from xcomstash.airflow.compat import secrets_masker

    return secrets_masker()


def masker_pattern() -> Pattern[str] | None:
    """The pattern of everything Airflow's secrets masker currently hides in this process
    (connection passwords, sensitive Variables, anything ``mask_secret`` was given, and the
    values of Airflow's own sensitive settings). Asked on every scan: it grows as a task runs."""
    return _masker().replacer


#: Airflow's sensitive settings whose values are arguments for something else (a dict of
#: keyword arguments), not secrets as a whole: their names are not used as field names.
_ARGUMENT_SETTINGS = ("_kwargs", "_args")


def masker_fields() -> frozenset[str]:
    """Names whose values are hidden whole, as Airflow hides them in its UI and logs: the
    masker's field names (``[core] sensitive_var_conn_names`` included), and the option names
    of Airflow's own sensitive settings (``fernet_key``, ``secret_key``, ``jwt_secret``,
    ``sql_alchemy_conn``, ``broker_url``, ...), so a value that copies one of them is caught."""
    fields = set(SENSITIVE_FIELD_NAMES)
    try:
        fields.update(_masker().sensitive_variables_fields)
    except Exception:
        pass
    try:
        from airflow.configuration import conf

        fields.update(option for _, option in conf.sensitive_config_values if not option.endswith(_ARGUMENT_SETTINGS))
    except Exception:
        pass
    return frozenset(f.strip().lower() for f in fields if f and f.strip())


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


def local_keyset_path() -> str:
    """Where the keyset of a single-machine deployment is created: beside the default store,
    outside it (so that nothing reading or collecting the store ever touches it)."""
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return os.path.join(os.path.abspath(home), "xcomstash-keyset.json")


def default_keyring(sign: bool | None, store_is_local: bool, store_url: str) -> KeyRing | None:
    """The keys of a deployment that configured none, so that references are signed without
    an extra step. A local directory store is one machine's: its keyset is created on first use
    (0600, in ``AIRFLOW_HOME``) and every Airflow process there shares it. A shared store
    (S3, ...) serves workers on other machines, which a file created here would not reach:
    there the operator provisions keys, or opts out of signing by name."""
    if sign is False:
        log.warning(
            "xcomstash: sign_references = false: references are not signed, so anyone who may write "
            "XComs (REST API, SQL) can make a task read another value or strip its readers"
        )
        return None
    if store_is_local:
        return KeyRing.single(provision_keyset_file(local_keyset_path()))
    raise ConfigError(
        f"xcomstash: the store {store_url} is shared between machines, so references must be signed with "
        "keys every worker holds: create a keyset ('xcomstash keys generate /path/keyset.json') and set "
        "[xcomstash] keysets = file:/path/keyset.json (or env:/variable:), or opt out of signing with "
        "[xcomstash] sign_references = false"
    )


def parse_cutoff(raw: str) -> float | None:
    """``accept_unsigned_references``: ``false``, or the time signing was switched on."""
    text = (raw or "").strip()
    if text.lower() in ("", "false", "0", "no", "off"):
        return None
    if text.lower() in ("true", "1", "yes", "on"):
        raise ConfigError(
            "[xcomstash] accept_unsigned_references takes the time signing was switched on (ISO 8601, e.g. "
            "2026-12-01T00:00:00Z): unsigned references are read only for objects written before it"
        )
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"[xcomstash] accept_unsigned_references must be false or an ISO 8601 time, got {text!r:.60}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def read_security(
    conf: Any,
    resolvers: dict[str, Callable[[str], str]] | None = None,
    *,
    store_is_local: bool = True,
    store_url: str = "",
) -> SecurityConfig:
    spec = conf.get(SECTION, "keysets", fallback="") or ""
    keyring = load_keyring(spec, resolvers or {"variable": variable_source})
    encrypt = _tristate(conf, "encrypt")
    sign = _tristate(conf, "sign_references")
    configured = keyring is not None
    if keyring is None:
        keyring = default_keyring(sign, store_is_local, store_url)
    default = ValueRule(
        allowed_types=parse_types(conf.get(SECTION, "allowed_types", fallback="") or ""),
        max_value_bytes=conf.getint(SECTION, "max_value_bytes", fallback=0) or None,
        sensitive_data=validate_policy((conf.get(SECTION, "sensitive_data", fallback="off") or "off").strip().lower()),
        read_scope=(conf.get(SECTION, "read_scope", fallback="any") or "any").strip().lower(),
    )
    if encrypt and sign is False:
        raise ConfigError(
            "[xcomstash] encrypt = true needs signed references: without them anyone who may write "
            "XComs can point a reader at another encrypted object (remove sign_references = false)"
        )
    return SecurityConfig(
        keyring=keyring,
        # Keys the operator provisioned encrypt by default; a created single-machine keyset signs.
        encrypt=configured if encrypt is None else encrypt,
        encryption_scope=(conf.get(SECTION, "encryption_scope", fallback="dag") or "dag").strip().lower(),
        compress_encrypted=tuple(
            p.strip() for p in (conf.get(SECTION, "compress_encrypted", fallback="") or "").split(",") if p.strip()
        ),
        accept_plaintext_objects=conf.getboolean(SECTION, "accept_plaintext_objects", fallback=False),
        sign_references=keyring is not None if sign is None else sign,
        unsigned_before=parse_cutoff(conf.get(SECTION, "accept_unsigned_references", fallback="") or ""),
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
    configured = bool((conf.get(SECTION, "keysets", fallback="") or "").strip())
    security = read_security(conf, store_is_local=store.capabilities.local, store_url=getattr(store, "root_uri", ""))
    sinks = audit_sinks(conf, store, secured=configured, keyring=security.keyring)
    return Guard(security, sinks, current_actor)
