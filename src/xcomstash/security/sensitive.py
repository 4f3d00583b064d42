"""Find secrets and personal data in a value before it is stored, and reject, mask or warn.

What is looked for (every finding names the detector and *where* in the value, never the
matched text, so errors and logs cannot leak what they report):

- ``registered-secret``: strings the deployment registered as secrets. In Airflow these are
  the patterns of Airflow's own secrets masker (connection passwords, sensitive Variables,
  anything passed to ``mask_secret``), handed in by the adapter as a compiled pattern;
- ``sensitive-field``: values under a dict key (or a table column) whose name marks it secret:
  Airflow's names and rule (``password``, ``secret``, ``token``, ``api_key``, ... anywhere in
  the name; in Airflow also its own sensitive settings such as ``fernet_key``), and
  detect-secrets' secret-sounding names (``pwd``, ``passwd``, ``db_pass``, ``auth_key``, ...);
- ``high-entropy-value``: a random-looking word under a key-like name (``signing_key``,
  ``credentials``, ``FERNET_KEY=...`` in text);
- what :mod:`xcomstash.security.detectors` finds in text: detect-secrets' plugins (token and
  key formats, ``secret-keyword`` for ``password: ...`` in text), the shape of an AWS secret
  access key, e-mail addresses and card numbers.

The detectors (and the detect-secrets library) are loaded on the first scan, never when the
policy is ``off``. A string is first checked by one or two combined regex passes (the literals
every match of a detector must contain, like ``AKIA`` or ``BEGIN``, and the shapes); only the
detectors it may match then run, so the common string costs a few microseconds.

**Bounds.** Plain values are walked as the JSON structure that will be stored, up to
``max_strings`` strings and ``max_chars`` characters; a value larger than that is scanned up to
the budget and the rest is not looked at (a warning says so). Tables (pandas, polars, Arrow) are
scanned by column type: only string columns (and the column names) are looked at, and of each
string column only ``sample_rows`` rows spread evenly over the table. Numeric columns, arrays
and raw bytes are not scanned (bytes: only the runs of printable text in the first
``max_bytes_scanned`` bytes). So a secret in
an unsampled row of a large table, or past the budget in a huge document, is *not* detected:
the scan is a safety net against accidents, not a guarantee.

**Policies**: ``reject`` fails the push with :class:`~xcomstash.errors.SensitiveDataError`;
``mask`` replaces each finding with ``***`` before the value is stored (whole values under
sensitive keys, matched substrings elsewhere; in a table, every row of a column where the
sample found something is masked with the same patterns); ``warn`` stores the value unchanged
and logs the findings; ``off`` skips the scan.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Iterable, Pattern

from xcomstash.errors import ConfigError, SensitiveDataError

if TYPE_CHECKING:  # imported for real on the first scan only (it loads detect-secrets)
    from xcomstash.security.detectors import Detector

log = logging.getLogger("xcomstash.security.sensitive")

REJECT, MASK, WARN, OFF = "reject", "mask", "warn", "off"
POLICIES = (REJECT, MASK, WARN, OFF)
REPLACEMENT = "***"
#: The finding of a random-looking word under a key-like name (``fernet_key``); the same
#: name as :data:`xcomstash.security.detectors.KEY_VALUE` (not imported from there: that
#: module loads detect-secrets).
KEY_VALUE = "high-entropy-value"

#: Airflow's DEFAULT_SENSITIVE_FIELDS (3.3), so masking agrees with Airflow's log masking.
SENSITIVE_FIELD_NAMES = frozenset(
    {
        "access_key", "access_token", "api_key", "apikey", "auth_header", "authorization",
        "bearer", "connection_string", "dsn", "passphrase", "passwd", "password", "private_key",
        "proxy_password", "secret", "service_account", "service_key", "token", "keyfile_dict",
        "webhook_url",
    }
)
_NON_WORD = re.compile(r"\W+")
_PRINTABLE_RUN = re.compile(rb"[\t\n\r\x20-\x7e]{6,}")
#: Keys of Airflow's serde envelope: structure, not user data.
_SERDE_KEYS = frozenset({"__classname__", "__version__", "__type", "__var", "__source"})


@dataclass(frozen=True)
class Finding:
    detector: str
    where: str

    def __str__(self) -> str:
        return f"{self.detector} at {self.where}"


@dataclass(frozen=True)
class ScanLimits:
    max_strings: int = 100_000
    max_chars: int = 16 * 1024 * 1024
    sample_rows: int = 1_000
    max_bytes_scanned: int = 1024 * 1024
    #: Findings listed in an error (the rest are counted).
    max_listed: int = 10


@dataclass
class _Budget:
    strings: int
    chars: int
    exhausted: bool = False

    def take(self, text: str) -> bool:
        if self.strings <= 0 or self.chars < len(text):
            self.exhausted = True
            return False
        self.strings -= 1
        self.chars -= len(text)
        return True


@dataclass
class Scanner:
    """Stateless apart from its configuration; one per engine. Building one is free: the
    detectors (and the detect-secrets library) are loaded on the first scan, so an engine
    whose policy is ``off`` never pays for them."""

    #: ``None``: :func:`xcomstash.security.detectors.default_detectors`.
    detectors: tuple[Detector, ...] | None = None
    #: Returns the current pattern of registered secrets (Airflow's masker ``replacer``) or None.
    registered: Callable[[], Pattern[str] | None] | None = None
    sensitive_fields: frozenset[str] = SENSITIVE_FIELD_NAMES
    limits: ScanLimits = field(default_factory=ScanLimits)

    # ------------------------------------------------------------ strings

    def _patterns(self) -> _Detectors:
        pattern = None
        if self.registered is not None:
            try:
                pattern = self.registered()
            except Exception:  # a broken masker must not break pushes; it just adds nothing
                pattern = None
            if pattern is not None and not pattern.pattern:
                pattern = None
        cached = self.__dict__.get("_compiled")
        if cached is not None and cached[0] is pattern:
            return cached[1]
        from xcomstash.security import detectors as ds  # detect-secrets: only once a scan runs

        found = list(self.detectors if self.detectors is not None else ds.default_detectors())
        if pattern is not None:
            found.insert(0, ds.Detector("registered-secret", pattern))
        compiled = _Detectors(found, ds, self.sensitive_fields)
        self.__dict__["_compiled"] = (pattern, compiled)
        return compiled

    @staticmethod
    def _field_is_sensitive(name: Any, detectors: _Detectors) -> bool:
        if not isinstance(name, str) or name in _SERDE_KEYS:
            return False
        return _name_is_sensitive(name, detectors.fields, detectors.keyword_names)

    @staticmethod
    def _key_value(name: Any, value: Any, detectors: _Detectors) -> bool:
        """A random-looking word under a key-like name (``fernet_key``, ``credentials``)."""
        return (
            isinstance(name, str)
            and isinstance(value, str)
            and name not in _SERDE_KEYS
            and detectors.ds.is_key_name(name)
            and detectors.ds.random_looking(value)
        )

    @staticmethod
    def _text_findings(detectors: _Detectors, text: str, where: str) -> list[Finding]:
        candidates = detectors.candidates(text)
        if not candidates:
            return []
        names = dict.fromkeys(d.name for d in candidates if d.spans(text))
        return [Finding(name, where) for name in names]

    @staticmethod
    def _mask_text(detectors: _Detectors, text: str) -> str:
        spans: list[tuple[int, int]] = []
        for d in detectors.candidates(text):
            spans.extend(d.spans(text))
        if not spans:
            return text
        spans.sort()
        out, at = [], 0
        for start, end in spans:
            if end <= at:
                continue
            out.append(text[at : max(at, start)])
            out.append(REPLACEMENT)
            at = end
        out.append(text[at:])
        return "".join(out)

    # ------------------------------------------------- JSON structures

    def scan_structure(self, obj: Any) -> tuple[list[Finding], bool]:
        """Findings in a JSON-like structure, and whether the whole value was looked at."""
        findings: list[Finding] = []
        budget = _Budget(self.limits.max_strings, self.limits.max_chars)
        self._walk(obj, "$", self._patterns(), budget, findings, mask=False)
        return findings, not budget.exhausted

    def mask_structure(self, obj: Any) -> tuple[Any, list[Finding], bool]:
        """A copy with every finding replaced by ``***`` (the input is not modified)."""
        findings: list[Finding] = []
        budget = _Budget(self.limits.max_strings, self.limits.max_chars)
        masked = self._walk(obj, "$", self._patterns(), budget, findings, mask=True)
        return masked, findings, not budget.exhausted

    def _walk(
        self, obj: Any, where: str, detectors: _Detectors, budget: _Budget, findings: list[Finding], *, mask: bool
    ) -> Any:
        if isinstance(obj, str):
            if not budget.take(obj):
                return obj
            hits = self._text_findings(detectors, obj, where)
            if not hits:
                return obj
            findings.extend(hits)
            return self._mask_text(detectors, obj) if mask else obj
        if isinstance(obj, dict):
            out = {} if mask else None
            for n, (k, v) in enumerate(obj.items()):
                path = f"{where}.{k}" if isinstance(k, str) and len(k) < 60 else f"{where}[key #{n}]"
                if isinstance(k, str) and k not in _SERDE_KEYS:
                    before = len(findings)
                    masked_key = self._walk(k, f"{where}[key #{n}]", detectors, budget, findings, mask=mask)
                    if len(findings) > before:  # the key itself holds a secret: never echo it
                        path = f"{where}[key #{n}]"
                        if mask:
                            k = masked_key if masked_key not in obj and masked_key not in out else f"{masked_key}#{n}"
                if self._field_is_sensitive(k, detectors) and _has_content(v):
                    findings.append(Finding("sensitive-field", path))
                    value = _masked_leaves(v) if mask else v
                elif self._key_value(k, v, detectors) and budget.take(v):
                    findings.append(Finding(KEY_VALUE, path))
                    value = REPLACEMENT if mask else v
                else:
                    value = self._walk(v, path, detectors, budget, findings, mask=mask)
                if out is not None:
                    out[k] = value
            return out if out is not None else obj
        if isinstance(obj, (list, tuple)):
            items = [self._walk(v, f"{where}[{i}]", detectors, budget, findings, mask=mask) for i, v in enumerate(obj)]
            return type(obj)(items) if mask else obj
        return obj

    # ------------------------------------------------------------ tables

    def scan_table(self, value: Any) -> tuple[list[Finding], bool]:
        findings, _ = self._table(value, mask=False)
        return findings, False

    def mask_table(self, value: Any) -> tuple[Any, list[Finding]]:
        findings, masked = self._table(value, mask=True)
        return masked, findings

    def _table(self, value: Any, *, mask: bool) -> tuple[list[Finding], Any]:
        """String columns only, sampled. Masking rewrites whole columns that had a finding."""
        import pyarrow as pa

        table, kind = _as_arrow(value)
        detectors = self._patterns()
        findings: list[Finding] = []
        #: Per hit column: ``whole`` (sensitive name), or ``text`` and/or ``value`` findings.
        hit_columns: dict[str, set[str]] = {}
        for index, name in enumerate(table.column_names):
            label = str(name)
            name_hits = self._text_findings(detectors, label, f"column #{index} name")
            findings.extend(name_hits)
            column = table.column(name)
            label_shown = f"#{index}" if name_hits else repr(label[:60])
            if not _is_string_type(column.type, pa):
                continue
            if self._field_is_sensitive(label, detectors) and column.null_count < len(column):
                findings.append(Finding("sensitive-field", f"column {label_shown}"))
                hit_columns[label] = {"whole"}
                continue
            key_like = detectors.ds.is_key_name(label)
            n = len(column)
            step = max(1, n // max(1, self.limits.sample_rows))
            sample = column.take(pa.array(range(0, n, step), pa.int64())) if n else column
            for i, text in enumerate(sample.to_pylist()):
                if isinstance(text, bytes):
                    text = text.decode("utf-8", "replace")
                if not isinstance(text, str):
                    continue
                where = f"column {label_shown} row {i * step}"
                if key_like and detectors.ds.random_looking(text):
                    findings.append(Finding(KEY_VALUE, where))
                    hit_columns.setdefault(label, set()).add("value")
                    continue
                hits = self._text_findings(detectors, text, where)
                if hits:
                    findings.extend(hits)
                    hit_columns.setdefault(label, set()).add("text")
        if not mask or not hit_columns:
            return findings, value
        return findings, _mask_columns(value, kind, table, hit_columns, detectors)

    # ------------------------------------------------------------- bytes

    def scan_bytes(self, data: bytes | bytearray | memoryview) -> list[Finding]:
        """The text in the first ``max_bytes_scanned`` bytes: runs of printable ASCII (a secret
        is text), so binary data (images, archives, pickles) costs a quick pass, not a scan of
        every detector over a megabyte of noise."""
        head = bytes(memoryview(data)[: self.limits.max_bytes_scanned])
        text = "\n".join(m.group().decode("ascii") for m in _PRINTABLE_RUN.finditer(head))
        return self._text_findings(self._patterns(), text, "bytes") if text else []


@lru_cache(maxsize=4096)
def _name_is_sensitive(name: str, fields: frozenset[str], keyword_names: Pattern[str] | None) -> bool:
    """Airflow's rule (a listed name is part of the key: ``db_password``) or one of
    detect-secrets' secret-sounding names (``pwd``, ``db_pass``, ``auth_key``)."""
    normalized = _NON_WORD.sub("_", name.strip().lower())
    if any(s in normalized for s in fields):
        return True
    return keyword_names is not None and keyword_names.search(normalized) is not None


class _Detectors(list):  # type: ignore[type-arg]
    """The detectors of one scan, with their combined prefilter and the name rules."""

    def __init__(self, detectors: list[Detector], ds: Any, fields: frozenset[str]) -> None:
        super().__init__(detectors)
        self.ds = ds
        self.fields = fields
        self.keyword_names: Pattern[str] = ds.KEYWORD_NAMES
        self.prefilter = ds.Prefilter(detectors)
        #: The detectors that may match a string (in the common case none, after one regex pass).
        self.candidates: Callable[[str], list[Detector]] = self.prefilter.candidates

    def subset(self, keep: list[Detector]) -> _Detectors:
        return _Detectors(keep, self.ds, self.fields)


def _has_content(value: Any) -> bool:
    return value not in (None, "", [], {})


def _masked_leaves(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (v if k in _SERDE_KEYS else _masked_leaves(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_masked_leaves(v) for v in value)
    return REPLACEMENT if value is not None else None


def _is_string_type(t: Any, pa: Any) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t))


def _as_arrow(value: Any) -> tuple[Any, str]:
    import pyarrow as pa

    if isinstance(value, pa.Table):
        return value, "arrow"
    if isinstance(value, pa.RecordBatch):
        return pa.Table.from_batches([value]), "batch"
    module = type(value).__module__.split(".", 1)[0]
    if module == "polars":
        return value.to_arrow(), "polars"
    if module == "pandas":
        # Only object/string columns are converted, so the scan stays cheap on numeric frames.
        cols = [c for c in value.columns if str(value[c].dtype) in ("object", "string", "category", "str")]
        parts = {}
        for c in cols:
            series = value[c]
            try:
                parts[str(c)] = pa.array(series.astype(str).where(series.notna(), None), from_pandas=True)
            except (pa.ArrowException, TypeError, ValueError):
                continue
        names = {str(c): c for c in value.columns}
        table = pa.table(parts) if parts else pa.table({})
        # Column names of non-string columns are still checked.
        extra = [n for n in names if n not in parts]
        for n in extra:
            table = table.append_column(n, pa.nulls(len(value), pa.int8()))
        return table, "pandas"
    raise TypeError(f"not a table: {type(value).__name__}")


def _mask_columns(value: Any, kind: str, table: Any, hit: dict[str, set[str]], detectors: _Detectors) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    def masked(column: Any, modes: set[str]) -> Any:
        if "whole" in modes:
            return pc.if_else(pc.is_valid(column), pa.scalar(REPLACEMENT), pa.scalar(None, pa.string()))
        column = column.cast(pa.large_string()) if not pa.types.is_large_string(column.type) else column
        python: list[Detector] = []
        for d in detectors:
            if not d.vectorizable:
                python.append(d)
                continue
            try:  # Arrow's regex engine (RE2), over the whole column
                column = pc.replace_substring_regex(column, detectors.ds.scoped_source(d.pattern), REPLACEMENT)
            except (pa.ArrowException, NotImplementedError):
                python.append(d)
        rest = detectors.subset(python)
        by_value = "value" in modes
        ds = detectors.ds

        def one(s: str | None) -> str | None:
            if s is None:
                return None
            if by_value and ds.random_looking(s):
                return REPLACEMENT
            return Scanner._mask_text(rest, s)

        return pa.chunked_array([pa.array([one(s) for s in column.to_pylist()], pa.large_string())])

    if kind == "pandas":
        out = value.copy()
        for label, modes in hit.items():
            original = next(c for c in value.columns if str(c) == label)
            import pandas as pd

            dtype = value[original].dtype
            series = pd.Series(masked(table.column(label), modes).to_pylist(), index=value.index, dtype=object)
            if str(dtype) != "object":
                try:  # keep string and categorical dtypes
                    series = series.astype(dtype if str(dtype) != "category" else "category")
                except (TypeError, ValueError):
                    pass
            out[original] = series
        return out
    new = table
    for label, modes in hit.items():
        idx = new.column_names.index(label)
        original_type = new.column(label).type
        column = masked(new.column(label), modes)
        try:  # keep the column's type (string, large_string, dictionary) as it was
            column = column.cast(original_type)
        except (pa.ArrowException, NotImplementedError):
            pass
        new = new.set_column(idx, label, column)
    if kind == "arrow":
        return new
    if kind == "batch":
        return new.combine_chunks().to_batches()[0]
    import polars as pl

    return pl.from_arrow(new)


# ------------------------------------------------------------------ policy


def validate_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ConfigError(f"sensitive data policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    return policy


def describe(findings: Iterable[Finding], limit: int = 10) -> str:
    items = list(findings)
    shown = "; ".join(str(f) for f in items[:limit])
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return shown + more


def enforce(policy: str, findings: list[Finding], what: str, *, rule: str = "sensitive_data") -> None:
    """Raise for ``reject``, log for ``warn`` (the caller masks for ``mask``)."""
    if not findings:
        return
    if policy == REJECT:
        raise SensitiveDataError(
            f"{what} looks like it holds secrets or personal data: {describe(findings)}. "
            f"Rule {rule} = reject. Return a reference to the secret (a connection id or "
            "Variable name) instead of the secret itself, or change the policy.",
            rule=rule,
        )
    if policy in (WARN, MASK):
        log.warning(
            "xcomstash: %s %s: %s (policy %s)",
            what, "holds likely secrets" if policy == WARN else "masked", describe(findings), policy,
        )
