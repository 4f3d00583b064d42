"""What the sensitive-data scan looks for: detect-secrets' plugins, adapted to XCom values.

This module imports ``detect_secrets`` at the top, and only :mod:`xcomstash.security.sensitive`
imports this module, on a scanner's first scan: an engine whose ``sensitive_data`` policy is
``off`` (the default) never loads it.

The detectors come from the maintained `detect-secrets`_ library rather than a list of our own
patterns, so new token formats arrive with library updates:

- every regex plugin of detect-secrets (AWS access key ids, PEM/OpenSSH/PGP private keys, JWTs
  that decode as JWTs, GitHub, GitLab, Slack, Stripe, SendGrid, Twilio, npm, PyPI, OpenAI,
  Discord, Telegram, Mailchimp, Square, Azure storage keys, IBM/Cloudant/SoftLayer credentials,
  passwords in URLs), except ``IPPublicDetector`` (an IP address is not a secret, and log lines
  are full of them);
- detect-secrets' keyword detector: ``password: hunter2``, ``pwd=...``, ``api_key = "..."`` in
  text, with its list of secret-sounding names; the value ends at the first blank, and
  placeholders (``{{ x }}``, ``${X}``, ``<x>``, ``None``, ``***``) are not findings;
- two entropy rules that use detect-secrets' Shannon entropy and its base64 limit (4.5 bits),
  but only where the *shape or the context* says "key", because plain high-entropy strings are
  everywhere in real data (digests, base64 payloads, ids) and flagging them would make
  ``reject`` unusable: a free-standing 40-character base64 word with upper case, lower case
  and digits (the shape of an AWS secret access key), and a random-looking base64 word under a
  key-like name (``fernet_key``, ``signing_key``, ``credentials``: see :func:`is_key_name`);
- personal data, which detect-secrets does not cover: e-mail addresses and card numbers that
  pass the Luhn check; and three token formats it does not know yet (Google API keys, GitHub
  fine-grained tokens, ``Bearer`` headers).

Known false positives: a base64 string of exactly 30 bytes standing alone (40 characters, no
padding) looks exactly like an AWS secret access key; a base64 digest under a ``*_key`` name
looks like a key (hex digests there are taken as digests and not reported).

.. _detect-secrets: https://github.com/Yelp/detect-secrets
"""

from __future__ import annotations

import bisect
import importlib
import re
import string
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterable, Pattern

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.filters.heuristic import is_potential_uuid, is_sequential_string, is_templated_secret
from detect_secrets.plugins import keyword as ds_keyword
from detect_secrets.plugins.base import RegexBasedDetector
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString
from detect_secrets.plugins.jwt import JwtTokenDetector

#: Plugins left out, and why: an IP address is not a secret.
SKIPPED_PLUGINS = frozenset({"IPPublicDetector"})

_BACKREFERENCE = re.compile(r"\\[1-9]|\(\?P=")
_ESCAPE = re.compile(r"\\.")
_UPPER = re.compile(r"[A-Z]")
_SCOPED_FLAGS = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"), (re.VERBOSE, "x"))


@dataclass(frozen=True)
class Detector:
    """One kind of finding: a pattern, which group of a match is the secret, and an optional
    check on that secret (a Luhn checksum, the entropy of a word, a JWT that decodes)."""

    name: str
    pattern: Pattern[str]
    confirm: Callable[[str], bool] | None = None
    #: The group holding the secret (masked); ``None``: the only group if it does not start
    #: the match (``://user:PASSWORD@``), else the whole match.
    group: int | None = None
    #: The secret ends at its first blank (keyword context: ``password: x and more words``).
    first_word: bool = False
    #: A regex that matches wherever the pattern could, for the combined prefilter; ``None``:
    #: the pattern itself (not possible for patterns with backreferences).
    prefilter: str | None = None
    #: Characters that continue the secret past the match (detect-secrets' JWT pattern ends
    #: lazily, before the signature; the whole token is masked).
    extend: frozenset[str] | None = None
    #: A check on the whole match, given the text and the match (the name before ``=``).
    context: Callable[[str, re.Match[str]], bool] | None = None
    #: For a case-insensitive pattern with no upper-case letters: the same pattern, case
    #: sensitive, to run on the lower-cased text (Python's ``IGNORECASE`` is several times
    #: slower; detect-secrets' keyword patterns are all of this kind).
    folded: Pattern[str] | None = field(init=False, default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        p = self.pattern
        if p.flags & re.IGNORECASE and not _UPPER.search(_ESCAPE.sub("", p.pattern)):
            object.__setattr__(self, "folded", re.compile(p.pattern, p.flags & ~re.IGNORECASE))

    def spans(self, text: str) -> list[tuple[int, int]]:
        out = []
        pattern, subject = self.pattern, text
        if self.folded is not None:
            lower = text.lower()
            if len(lower) == len(text):  # same offsets (not so for a few letters, like U+0130)
                pattern, subject = self.folded, lower
        for m in pattern.finditer(subject):
            start, end = self._secret_span(m)
            if end <= start:
                continue
            if self.extend is not None:
                while end < len(text) and text[end] in self.extend:
                    end += 1
            if self.first_word:
                blank = _BLANK.search(text, start, end)
                if blank is not None:
                    end = blank.start()
                if end <= start:
                    continue
            if self.context is not None and not self.context(text, m):
                continue
            if self.confirm is None or self.confirm(text[start:end]):
                out.append((start, end))
        return out

    def _secret_span(self, m: re.Match[str]) -> tuple[int, int]:
        if self.group is not None:
            return m.span(self.group)
        if self.pattern.groups == 1 and m.group(1) and m.start(1) > m.start():
            return m.span(1)
        return m.span()

    @property
    def vectorizable(self) -> bool:
        """Whether Arrow's regex engine can mask with this pattern directly (no Python check,
        the whole match is the secret, no lookaround or backreference, which RE2 lacks)."""
        source = self.pattern.pattern
        return (
            self.confirm is None
            and self.context is None
            and not self.first_word
            and (self.group == 0 or (self.group is None and self.pattern.groups == 0))
            and "(?<" not in source.replace("(?<P", "")
            and "(?=" not in source
            and "(?!" not in source
            and not _BACKREFERENCE.search(source)
            and not self.pattern.flags & re.VERBOSE
        )


def scoped_source(pattern: Pattern[str]) -> str:
    """The pattern's source with its flags inline, so it can be combined with others (and
    handed to Arrow) without losing ``IGNORECASE`` and the like."""
    flags = "".join(letter for flag, letter in _SCOPED_FLAGS if pattern.flags & flag)
    if not flags:
        return f"(?:{pattern.pattern})"
    tail = "\n" if pattern.flags & re.VERBOSE else ""  # a verbose pattern may end in a comment
    return f"(?{flags}:{pattern.pattern}{tail})"


def min_width(source: str) -> int:
    """The shortest text a pattern can match (0 if unknown): shorter strings skip it."""
    try:
        return int(_parser().parse(source).getwidth()[0])
    except Exception:  # a private module of ``re``: if it changes, nothing is skipped
        return 0


def prefilter_source(detector: Detector) -> str | None:
    if detector.prefilter is not None:
        return detector.prefilter
    if _BACKREFERENCE.search(detector.pattern.pattern):
        return None  # group numbers would shift inside a combined pattern
    return scoped_source(detector.pattern)


# ---------------------------------------------------------------- entropy

_BASE64 = Base64HighEntropyString()
_BLANK = re.compile(r"\s")
_WORD = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX = re.compile(r"[0-9a-fA-F]+")


def entropy(text: str) -> float:
    """Shannon entropy over the base64 alphabet, as detect-secrets computes it."""
    return _BASE64.calculate_shannon_entropy(text)


def random_looking(text: str) -> bool:
    """A single base64 or base64url word of 16+ characters whose entropy passes detect-secrets'
    base64 limit, and which is not a hex digest, a UUID or a run like ``ABCDEF...``."""
    if not _WORD.fullmatch(text) or _HEX.fullmatch(text) or is_potential_uuid(text) or is_sequential_string(text):
        return False
    return entropy(text) > _BASE64.entropy_limit


def _aws_secret_shape(text: str) -> bool:
    return (
        any(c.isupper() for c in text)
        and any(c.islower() for c in text)
        and any(c.isdigit() for c in text)
        and entropy(text) > _BASE64.entropy_limit
    )


#: Name parts that make a random-looking value under that name a likely key. Whole parts of
#: the name only (``fernet_key``, ``signingKey``), so ``monkey`` or ``keyboard`` do not count.
KEY_NAME_PARTS = frozenset({"key", "keys", "cred", "creds", "credential", "credentials", "hmac"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_PARTS = re.compile(r"[^A-Za-z0-9]+")


@lru_cache(maxsize=4096)
def is_key_name(name: str) -> bool:
    """Whether a dict key or column name says "key" (see :data:`KEY_NAME_PARTS`)."""
    parts = _PARTS.split(_CAMEL.sub("_", name).lower())
    return any(p in KEY_NAME_PARTS for p in parts)


def _key_assignment(text: str, m: re.Match[str]) -> bool:
    return is_key_name(text[m.start(1) : m.end(1)])


def _key_assignment_detector() -> Detector:
    """``FERNET_KEY=...``, ``"signingKey": "..."`` in text: the same rule as for a dict key."""
    return Detector(
        KEY_VALUE,
        re.compile(
            r"\b([a-z0-9_.-]*(?:key|cred|hmac)[a-z0-9_]*)[\]'\"]{0,2}\s*[:=]\s*['\"]?([a-z0-9+/_-]{16,}={0,2})(?![a-z0-9+/=_-])",
            re.IGNORECASE,
        ),
        random_looking,
        group=2,
        context=_key_assignment,
        prefilter="key|cred|hmac",
    )


#: The finding of a random-looking word under a key-like name.
KEY_VALUE = "high-entropy-value"


# ---------------------------------------------------------------- keywords

#: detect-secrets' secret-sounding names (``pwd``, ``passwd``, ``db_pass``, ``auth_key``, ...)
#: as one pattern to search a normalized dict key or column name with.
KEYWORD_NAMES = re.compile("|".join(f"(?:{k})" for k in ds_keyword.DENYLIST))

_PLACEHOLDERS = frozenset({"none", "null", "nil", "true", "false", "undefined", "redacted", "changeme?"})


def _keyword_value_ok(secret: str) -> bool:
    """detect-secrets' placeholder filters plus the obvious non-values."""
    secret = secret.strip("'\"`;,")
    if len(secret) < 3 or is_templated_secret(secret) or secret.startswith("$"):
        return False
    if set(secret) <= {"*", "x", "X", "."}:
        return False
    return secret.lower() not in _PLACEHOLDERS


def _keyword_detectors() -> list[Detector]:
    """detect-secrets' keyword patterns for config-like text and for quoted values."""
    groups: dict[Pattern[str], int] = {}
    for table in (ds_keyword.CONFIG_DENYLIST_REGEX_TO_GROUP, ds_keyword.QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP,
                  ds_keyword.GOLANG_DENYLIST_REGEX_TO_GROUP):
        groups.update(table)
    names = "|".join(ds_keyword.DENYLIST)  # lower case: the prefilter folds the text
    return [
        Detector("secret-keyword", pattern, _keyword_value_ok, group=group, first_word=True, prefilter=names)
        for pattern, group in groups.items()
    ]


# ---------------------------------------------------------------- the set


def _slug(secret_type: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", secret_type.lower()).strip("-")


_JWT_CHARS = frozenset(string.ascii_letters + string.digits + "-_.+/=")

#: Short names for a few of detect-secrets' types (the rest are their type, slugged).
_NAMES = {"JSON Web Token": "jwt"}


def _plugin_detectors() -> list[Detector]:
    out = []
    mapping = get_mapping_from_secret_type_to_class()
    for secret_type, plugin in sorted(mapping.items(), key=lambda kv: kv[1].__name__):
        if not issubclass(plugin, RegexBasedDetector) or plugin.__name__ in SKIPPED_PLUGINS:
            continue
        name = _NAMES.get(secret_type, _slug(secret_type))
        jwt = plugin is JwtTokenDetector
        confirm = JwtTokenDetector.is_formally_valid if jwt else None
        extend = _JWT_CHARS if jwt else None
        out.extend(Detector(name, pattern, confirm, extend=extend) for pattern in plugin.denylist)
    return out


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


def _card_ok(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and len(set(digits)) > 1 and _luhn_ok(digits)


def _own_detectors() -> list[Detector]:
    """What detect-secrets does not cover: the AWS secret key shape, personal data, and three
    token formats."""
    return [
        Detector(
            "aws-secret-access-key",
            re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/]{40}(?![A-Za-z0-9+/=_-])"),
            _aws_secret_shape,
        ),
        Detector(
            "token",
            re.compile(r"\b(?:github_pat_[A-Za-z0-9_]{40,255}|AIza[0-9A-Za-z_-]{35})|(?i:\bbearer\s+[A-Za-z0-9._~+/-]{20,}=*)"),
        ),
        Detector("email", re.compile(r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\b")),
        # Digits standing alone (not inside a UUID, a hex digest or a longer number), in one
        # run or in the groups cards are printed in, starting like a card network's numbers.
        Detector(
            "card-number",
            re.compile(
                r"(?<![0-9A-Za-z])(?<![0-9][ -])"
                r"(?:[0-9]{13,19}|[0-9]{4}(?: [0-9]{4}){2,3}(?: [0-9]{1,4})?|[0-9]{4}(?:-[0-9]{4}){2,3}(?:-[0-9]{1,4})?"
                r"|[0-9]{4} [0-9]{6} [0-9]{4,5}|[0-9]{4}-[0-9]{6}-[0-9]{4,5})"
                r"(?![0-9A-Za-z])(?![ -][0-9])"
            ),
            _card_ok,
            # Eight digits (one separator at most) are in every card number; a pattern that
            # starts with a character class lets the regex engine skip ahead (not so with the
            # lookbehinds), which matters on large text.
            prefilter=r"[0-9]{4}[ -]?[0-9]{4}",
        ),
    ]


@lru_cache(maxsize=1)
def default_detectors() -> tuple[Detector, ...]:
    """Built once per process, on the first scan."""
    return (*_plugin_detectors(), *_keyword_detectors(), _key_assignment_detector(), *_own_detectors())


def _parser() -> Any:
    return importlib.import_module("re._parser" if sys.version_info >= (3, 11) else "sre_parse")


def _case_sensitive(detector: Detector, source: str) -> bool:
    return not detector.pattern.flags & re.IGNORECASE and "(?i" not in source and source == scoped_source(detector.pattern)


def required_literals(source: str, *, fold: bool = True) -> frozenset[str] | None:
    """Strings of which every match of the pattern contains at least one, case-folded (so a
    check on the case-folded text is safe whatever the pattern's flags); ``None`` when the
    pattern has no such literal (``[A-Za-z0-9]{40}``). Read from the parsed pattern."""
    try:
        parsed = _parser().parse(source)
        found = _required(list(parsed), _constants())
    except Exception:  # ``re``'s parser is private: if it changes, the detector is not literal-filtered
        return None
    if not found or any(len(x) < 2 and (x.isalnum() or x.isspace() or x in _COMMON) for x in found):
        return None  # a common single character (``:``, ``.``) would let almost every string through
    return frozenset(x.casefold() for x in found) if fold else frozenset(found)


_COMMON = frozenset(".:-_/,=;")


def _constants() -> Any:
    return importlib.import_module("re._constants" if sys.version_info >= (3, 11) else "sre_constants")


def _required(items: list[Any], c: Any) -> frozenset[str] | None:
    best: frozenset[str] | None = None
    run: list[str] = []

    def consider(req: frozenset[str] | None) -> None:
        nonlocal best
        if not req:
            return
        key = (min(len(x) for x in req), -len(req))
        if best is None or key > (min(len(x) for x in best), -len(best)):
            best = req

    for op, av in items:
        if op is c.LITERAL:
            run.append(chr(av))
            continue
        consider(frozenset({"".join(run)}) if run else None)
        run = []
        if op is c.SUBPATTERN:
            consider(_required(list(av[-1]), c))
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT) and av[0] >= 1:
            consider(_required(list(av[2]), c))
        elif op is c.BRANCH:
            alternatives = [_required(list(b), c) for b in av[1]]
            if all(alternatives):
                consider(frozenset().union(*alternatives))  # type: ignore[arg-type]
    consider(frozenset({"".join(run)}) if run else None)
    return best


class Prefilter:
    """Which detectors a string needs, decided cheaply (most strings need none):

    - a detector whose every match contains one of a few literals (``AKIA``, ``ghp_``,
      ``BEGIN``, ``@``, the names of the keyword detector) is a candidate only if the
      case-folded string contains one; one combined regex pass over the folded string rules
      them all out at once;
    - the others (shapes like 40 base64 characters, card numbers) are combined into a second
      regex, and skipped for strings shorter than their shortest match.
    """

    def __init__(self, detectors: Iterable[Detector]) -> None:
        self.detectors = list(detectors)
        self.always: list[Detector] = []
        #: (detector, its literals case-folded, the literals as written if the pattern is case sensitive)
        self.literal: list[tuple[Detector, frozenset[str], frozenset[str] | None]] = []
        shaped: list[tuple[int, Detector]] = []
        for d in self.detectors:
            source = prefilter_source(d)
            if source is None:
                self.always.append(d)
                continue
            literals = required_literals(source)
            if literals is not None:
                exact = required_literals(source, fold=False) if _case_sensitive(d, source) else None
                self.literal.append((d, literals, exact))
            else:
                shaped.append((min_width(source), d))
        words = sorted({x for _, lits, _ in self.literal for x in lits}, key=len, reverse=True)
        alternation = "|".join(re.escape(w) for w in words)
        self.words = re.compile(alternation) if words else None
        #: Every literal occurrence, overlapping; at each position the longest literal that
        #: starts there (any shorter one starting there is its prefix: see ``by_word``).
        self.each_word = re.compile(f"(?=({alternation}))") if words else None
        #: For each literal: the detectors with a literal inside it (itself included).
        self.by_word: dict[str, tuple[int, ...]] = {
            w: tuple(i for i, (_, lits, _) in enumerate(self.literal) if any(x in w for x in lits)) for w in words
        }
        self.shape_width = min((w for w, _ in shaped), default=0)
        self.shaped = [d for _, d in shaped]
        self.shapes = _combine(self.shaped) if shaped else None
        if shaped and self.shapes is None:  # cannot be combined: run them on every string
            self.always.extend(self.shaped)
            self.shaped = []

    def candidates(self, text: str) -> list[Detector]:
        out: list[Detector] | None = None
        words = self.words
        if words is not None:
            folded = text.casefold()
            if words.search(folded) is not None:
                by_word = self.by_word
                if len(folded) <= _LONG:
                    hit = {i for m in self.each_word.finditer(folded) for i in by_word[m.group(1)]}  # type: ignore[union-attr]
                else:  # a lookahead at every position is slow on long text; a substring search per literal is not
                    hit = {i for w, ids in by_word.items() if w in folded for i in ids}
                literal = self.literal
                out = [
                    literal[i][0]
                    for i in sorted(hit)
                    if literal[i][2] is None or any(x in text for x in literal[i][2])  # type: ignore[union-attr]
                ]
        shapes = self.shapes
        if shapes is not None and len(text) >= self.shape_width and shapes.search(text) is not None:
            out = self.shaped + out if out else self.shaped
        if not self.always:
            return out or _NONE
        return self.always + out if out else self.always


_NONE: list[Detector] = []
#: Past this length, which literals a string holds is found by one substring search each.
_LONG = 512


def _combine(detectors: list[Detector]) -> Pattern[str] | None:
    try:
        return re.compile("|".join(dict.fromkeys(prefilter_source(d) or "" for d in detectors)))
    except re.error:
        return None
