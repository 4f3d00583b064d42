"""Value rules per deployment and per DAG id pattern: which types may be pushed, how big a
value may be, the sensitive-data policy, and who may read a value by default.

Deployment-wide settings are the defaults; ``dag_policies`` (a JSON list in ``[xcomstash]``)
overrides them for DAG ids matching a pattern (``fnmatch``; the first matching entry wins,
its unset fields fall back to the deployment's)::

    [{"dags": "finance_*", "allowed_types": ["json"], "max_value_bytes": 1048576,
      "sensitive_data": "reject", "read_scope": "dag"}]

Type names in an allowlist are matched against the value's short type name
(``pandas.DataFrame``, ``dict``, ``numpy.ndarray``), its codec name (``pandas.arrow-ipc``), or
the word ``json``: any value stored as JSON through Airflow's serde (dicts, lists, strings,
numbers, datetimes...), which is what "JSON-only DAGs" means. ``*`` allows everything.

A violation fails the producing task with an error naming the rule (``allowed_types`` of
``dag_policies[0] (dags='finance_*')``, or of the deployment).
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from typing import Any

from xcomstash.errors import ConfigError, TypeNotAllowedError, ValueTooLargeError
from xcomstash.security.sensitive import OFF, validate_policy

READ_ANY = "any"
READ_DAG = "dag"
READ_SCOPES = (READ_ANY, READ_DAG)
JSON_TYPES = "json"
_FIELDS = {"dags", "allowed_types", "max_value_bytes", "sensitive_data", "read_scope", "store_url"}


@dataclass(frozen=True)
class ValueRule:
    """One set of rules; ``None`` means "as the deployment says"."""

    dags: str = "*"
    allowed_types: tuple[str, ...] | None = None
    max_value_bytes: int | None = None
    sensitive_data: str | None = None
    read_scope: str | None = None
    #: Where these DAGs' values are stored (a store URL, or several: replicated); ``None``:
    #: the deployment's ``store_url``. See :mod:`xcomstash.stores.routed`.
    store_url: str | None = None
    #: Where the rule came from, for error messages.
    origin: str = "the deployment ([xcomstash])"

    def __post_init__(self) -> None:
        if self.max_value_bytes is not None and (
            not isinstance(self.max_value_bytes, int) or isinstance(self.max_value_bytes, bool) or self.max_value_bytes < 0
        ):
            raise ConfigError(f"{self.origin}: max_value_bytes must be a non-negative integer")
        if self.sensitive_data is not None:
            validate_policy(self.sensitive_data)
        if self.read_scope is not None and self.read_scope not in READ_SCOPES:
            raise ConfigError(f"{self.origin}: read_scope must be one of {READ_SCOPES}, got {self.read_scope!r}")
        if self.allowed_types is not None and not all(isinstance(t, str) and t for t in self.allowed_types):
            raise ConfigError(f"{self.origin}: allowed_types must be a list of type names")
        if self.store_url is not None:
            from xcomstash.stores.locations import store_urls

            if not isinstance(self.store_url, str):
                raise ConfigError(f"{self.origin}: store_url must be a string")
            try:
                store_urls(self.store_url)
            except ConfigError as exc:
                raise ConfigError(f"{self.origin}: {exc}") from None


@dataclass(frozen=True)
class Effective:
    """The rules that apply to one DAG, each with the origin of the setting."""

    dag_id: str
    allowed_types: tuple[str, ...] | None
    types_origin: str
    max_value_bytes: int
    size_origin: str
    sensitive_data: str
    read_scope: str

    def check_type(self, type_name: str, codec_name: str, is_json: bool) -> None:
        allowed = self.allowed_types
        if allowed is None or "*" in allowed:
            return
        if type_name in allowed or codec_name in allowed or (is_json and JSON_TYPES in allowed):
            return
        raise TypeNotAllowedError(
            f"values of type {type_name} (codec {codec_name}) may not be pushed by DAG {self.dag_id!r}: "
            f"rule allowed_types of {self.types_origin} allows only {', '.join(allowed)}",
            rule=f"allowed_types of {self.types_origin}",
        )

    def check_size(self, size: int, *, estimated: bool = False) -> None:
        limit = self.max_value_bytes
        if limit and size > limit:
            what = "at least " if estimated else ""
            raise ValueTooLargeError(
                f"value of DAG {self.dag_id!r} is {what}{size:,} bytes, over the limit of {limit:,} "
                f"set by rule max_value_bytes of {self.size_origin}",
                rule=f"max_value_bytes of {self.size_origin}",
            )


@dataclass(frozen=True)
class Rules:
    default: ValueRule = field(default_factory=ValueRule)
    per_dag: tuple[ValueRule, ...] = ()

    def for_dag(self, dag_id: str) -> Effective:
        match = next((r for r in self.per_dag if fnmatch.fnmatchcase(dag_id, r.dags)), None)
        d = self.default

        def pick(name: str) -> tuple[Any, str]:
            if match is not None and getattr(match, name) is not None:
                return getattr(match, name), match.origin
            return getattr(d, name), d.origin

        types, types_origin = pick("allowed_types")
        size, size_origin = pick("max_value_bytes")
        sensitive, _ = pick("sensitive_data")
        scope, _ = pick("read_scope")
        return Effective(
            dag_id=dag_id,
            allowed_types=types,
            types_origin=types_origin,
            max_value_bytes=size or 0,
            size_origin=size_origin,
            sensitive_data=sensitive or OFF,
            read_scope=scope or READ_ANY,
        )

    @property
    def restricts(self) -> bool:
        """Whether any rule limits anything (otherwise pushes need no rule checks at all)."""
        return any(
            r.allowed_types is not None
            or r.max_value_bytes
            or r.sensitive_data not in (None, OFF)
            or r.read_scope not in (None, READ_ANY)
            for r in (self.default, *self.per_dag)
        )

    @property
    def scans(self) -> bool:
        """Whether any DAG may need a sensitive-data scan (so the engine can skip the work)."""
        return any(r.sensitive_data not in (None, OFF) for r in (self.default, *self.per_dag))


def parse_types(text: str) -> tuple[str, ...] | None:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    return names or None


def parse_dag_policies(text: str) -> tuple[ValueRule, ...]:
    """The ``dag_policies`` option: a JSON list of rule objects (empty text: none)."""
    if not text.strip():
        return ()
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"dag_policies is not valid JSON: {exc}") from None
    if not isinstance(doc, list):
        raise ConfigError("dag_policies must be a JSON list of objects")
    rules = []
    for n, entry in enumerate(doc):
        origin = f"dag_policies[{n}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("dags"), str):
            raise ConfigError(f"{origin} must be an object with a \"dags\" pattern")
        unknown = set(entry) - _FIELDS
        if unknown:
            raise ConfigError(f"{origin} has unknown fields {sorted(unknown)} (known: {sorted(_FIELDS)})")
        types = entry.get("allowed_types")
        if isinstance(types, str):
            types = parse_types(types)
        elif types is not None:
            if not isinstance(types, list):
                raise ConfigError(f"{origin}: allowed_types must be a list of type names")
            types = tuple(types)
        rules.append(
            ValueRule(
                dags=entry["dags"],
                allowed_types=types,
                max_value_bytes=entry.get("max_value_bytes"),
                sensitive_data=entry.get("sensitive_data"),
                read_scope=entry.get("read_scope"),
                store_url=entry.get("store_url"),
                origin=f"{origin} (dags={entry['dags']!r})",
            )
        )
    return tuple(rules)


def dag_store_urls(rules: tuple[ValueRule, ...]) -> tuple[tuple[str, str | None], ...]:
    """``(pattern, store_url or None)`` per rule, in order, when any rule names a store
    (empty otherwise: every DAG uses ``store_url``)."""
    if not any(rule.store_url for rule in rules):
        return ()
    return tuple((rule.dags, rule.store_url) for rule in rules)
