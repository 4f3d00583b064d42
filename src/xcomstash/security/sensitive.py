"""Find secrets and personal data in a value before it is stored, and reject, mask or warn.

What is looked for (every finding names the detector and *where* in the value, never the
matched text, so errors and logs cannot leak what they report):

- ``registered-secret``: strings the deployment registered as secrets. In Airflow these are
  the patterns of Airflow's own secrets masker (connection passwords, sensitive Variables,
  anything passed to ``mask_secret``), handed in by the adapter as a compiled pattern;
- ``sensitive-field``: values under a dict key whose name marks it secret (``password``,
  ``secret``, ``token``, ``api_key``, ... the same names and rule as Airflow's masker);
- ``aws-access-key``, ``private-key`` (PEM blocks), ``jwt``, ``token`` (GitHub, Slack, Google
  API, Stripe live keys, ``Bearer`` headers), ``email``, ``card-number`` (13-19 digits that
  pass the Luhn checksum).

**Bounds.** Plain values are walked as the JSON structure that will be stored, up to
``max_strings`` strings and ``max_chars`` characters; a value larger than that is scanned up to
the budget and the rest is not looked at (a warning says so). Tables (pandas, polars, Arrow) are
scanned by column type: only string columns (and the column names) are looked at, and of each
string column only ``sample_rows`` rows spread evenly over the table. Numeric columns, arrays
and raw bytes are not scanned (bytes: only the first ``max_bytes_scanned`` bytes). So a secret in
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
from typing import Any, Callable, Iterable, Pattern

from xcomstash.errors import ConfigError, SensitiveDataError

log = logging.getLogger("xcomstash.security.sensitive")

REJECT, MASK, WARN, OFF = "reject", "mask", "warn", "off"
POLICIES = (REJECT, MASK, WARN, OFF)
REPLACEMENT = "***"

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
#: Keys of Airflow's serde envelope: structure, not user data.
_SERDE_KEYS = frozenset({"__classname__", "__version__", "__type", "__var", "__source"})


def _luhn_ok(digits: str) -> bool:
    total, alt = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if alt:
            d *= 2
            if d > 9:
                d -= 9
        total += d
        alt = not alt
    return total % 10 == 0


@dataclass(frozen=True)
class Detector:
    name: str
    pattern: Pattern[str]
    #: Extra check on a match (the Luhn checksum for card numbers).
    confirm: Callable[[str], bool] | None = None

    def matches(self, text: str) -> list[tuple[int, int]]:
        out = []
        for m in self.pattern.finditer(text):
            if self.confirm is None or self.confirm(m.group(0)):
                out.append(m.span())
        return out


def _card_ok(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and _luhn_ok(digits)


DEFAULT_DETECTORS: tuple[Detector, ...] = (
    Detector("aws-access-key", re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA|AIDA|AROA)[A-Z0-9]{16}(?![A-Z0-9])")),
    Detector("private-key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    Detector("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    Detector(
        "token",
        re.compile(
            r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{40,255}|xox[abposr]-[A-Za-z0-9-]{10,200}"
            r"|AIza[0-9A-Za-z_-]{35}|[sr]k_live_[0-9A-Za-z]{20,200}|glpat-[0-9A-Za-z_-]{20,})"
            r"|(?i:\bbearer\s+[A-Za-z0-9._~+/-]{20,}=*)"
        ),
    ),
    Detector("email", re.compile(r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\b")),
    Detector("card-number", re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])"), _card_ok),
)


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
    """Stateless apart from its configuration; one per engine."""

    detectors: tuple[Detector, ...] = DEFAULT_DETECTORS
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
        found = list(self.detectors)
        if pattern is not None:
            found.insert(0, Detector("registered-secret", pattern))
        compiled = _Detectors(found, _prefilter(found))
        self.__dict__["_compiled"] = (pattern, compiled)
        return compiled

    def _field_is_sensitive(self, name: Any) -> bool:
        if not isinstance(name, str) or name in _SERDE_KEYS:
            return False
        return _name_is_sensitive(name, self.sensitive_fields)

    @staticmethod
    def _text_findings(detectors: _Detectors, text: str, where: str) -> list[Finding]:
        if detectors.prefilter is not None and detectors.prefilter.search(text) is None:
            return []  # one combined pass rules out every detector (the common case)
        return [Finding(d.name, where) for d in detectors if d.matches(text)]

    @staticmethod
    def _mask_text(detectors: list[Detector], text: str) -> str:
        spans: list[tuple[int, int]] = []
        for d in detectors:
            spans.extend(d.matches(text))
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
                if self._field_is_sensitive(k) and _has_content(v):
                    findings.append(Finding("sensitive-field", path))
                    value = _masked_leaves(v) if mask else v
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
        hit_columns: dict[str, bool] = {}
        for name in table.column_names:
            label = str(name)
            name_hits = self._text_findings(detectors, label, f"column #{table.column_names.index(name)} name")
            findings.extend(name_hits)
            column = table.column(name)
            if name_hits:
                label_shown = f"#{table.column_names.index(name)}"
            else:
                label_shown = repr(label[:60])
            sensitive_name = self._field_is_sensitive(label)
            if not _is_string_type(column.type, pa):
                continue
            if sensitive_name and column.null_count < len(column):
                findings.append(Finding("sensitive-field", f"column {label_shown}"))
                hit_columns[label] = True
                continue
            n = len(column)
            step = max(1, n // max(1, self.limits.sample_rows))
            sample = column.take(pa.array(range(0, n, step), pa.int64())) if n else column
            for i, text in enumerate(sample.to_pylist()):
                if isinstance(text, bytes):
                    text = text.decode("utf-8", "replace")
                if not isinstance(text, str):
                    continue
                hits = self._text_findings(detectors, text, f"column {label_shown} row {i * step}")
                if hits:
                    findings.extend(hits)
                    hit_columns[label] = False
        if not mask or not hit_columns:
            return findings, value
        return findings, _mask_columns(value, kind, table, hit_columns, detectors)

    # ------------------------------------------------------------- bytes

    def scan_bytes(self, data: bytes | bytearray | memoryview) -> list[Finding]:
        head = bytes(memoryview(data)[: self.limits.max_bytes_scanned]).decode("latin-1")
        return self._text_findings(self._patterns(), head, "bytes")


@lru_cache(maxsize=4096)
def _name_is_sensitive(name: str, fields: frozenset[str]) -> bool:
    normalized = _NON_WORD.sub("_", name.strip().lower())
    return any(s in normalized for s in fields)


class _Detectors(list):  # type: ignore[type-arg]
    """The detectors of one scan, with their combined prefilter."""

    def __init__(self, detectors: list[Detector], prefilter: Pattern[str] | None) -> None:
        super().__init__(detectors)
        self.prefilter = prefilter


def _prefilter(detectors: list[Detector]) -> Pattern[str] | None:
    """One alternation of every detector's pattern: a string none of them can match is ruled
    out in a single regex pass. ``None`` if the patterns cannot be combined."""
    try:
        return re.compile("|".join(f"(?:{d.pattern.pattern})" for d in detectors))
    except re.error:
        return None


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


def _mask_columns(value: Any, kind: str, table: Any, hit: dict[str, bool], detectors: _Detectors) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    def masked(column: Any, whole: bool) -> Any:
        if whole:
            return pc.if_else(pc.is_valid(column), pa.scalar(REPLACEMENT), pa.scalar(None, pa.string()))
        column = column.cast(pa.large_string()) if not pa.types.is_large_string(column.type) else column
        for d in detectors:
            if d.confirm is None:
                column = pc.replace_substring_regex(column, _re2(d.pattern.pattern), REPLACEMENT)
            else:  # needs a Python check (Luhn): do it row by row
                column = pa.chunked_array(
                    [pa.array([None if s is None else Scanner._mask_text([d], s) for s in column.to_pylist()], pa.large_string())]
                )
        return column

    if kind == "pandas":
        out = value.copy()
        for label, whole in hit.items():
            original = next(c for c in value.columns if str(c) == label)
            import pandas as pd

            dtype = value[original].dtype
            series = pd.Series(masked(table.column(label), whole).to_pylist(), index=value.index, dtype=object)
            if str(dtype) != "object":
                try:  # keep string and categorical dtypes
                    series = series.astype(dtype if str(dtype) != "category" else "category")
                except (TypeError, ValueError):
                    pass
            out[original] = series
        return out
    new = table
    for label, whole in hit.items():
        idx = new.column_names.index(label)
        original_type = new.column(label).type
        column = masked(new.column(label), whole)
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


def _re2(pattern: str) -> str:
    """Arrow's regex engine (RE2) has no lookbehind: drop assertions (masking may then match a
    little more generously than detection, which is the safe direction)."""
    return re.sub(r"\(\?<?[!=][^)]*\)", "", pattern)


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
