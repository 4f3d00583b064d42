"""Keys: a keyset (one primary key for new values, older keys still accepted for reading),
keysets scoped per DAG id pattern (one per team), and where keysets come from.

A keyset is a small JSON document, so it fits an env var, a file or an Airflow Variable::

    {"xcomstash_keyset": 1, "primary": "k3f9a01c2",
     "keys": [{"id": "k3f9a01c2", "secret": "<32 bytes, base64url>", "created": "2026-11-23T14:00:00Z"},
              {"id": "k0b77e415", "secret": "...", "created": "2026-05-01T09:00:00Z"}]}

Every key is 32 random bytes. Nothing uses a key's bytes directly: each purpose gets its own
subkey through HKDF-SHA256 (RFC 5869) with a purpose label, so the key that wraps data keys,
the key that signs references and the key that names deduplicated blobs are independent.

Scoping: ``team_a_*=file:/etc/xcomstash/team_a.json; team_b_*=variable:xcs_team_b`` gives each
DAG id pattern its own keyset (first match wins). A worker given only team A's keyset has no
key for team B's objects and no way to sign team B's references.
"""

from __future__ import annotations

import base64
import binascii
import errno
import fnmatch
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Mapping

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from xcomstash.errors import ConfigError, KeyUnavailableError

log = logging.getLogger("xcomstash")

KEY_BYTES = 32
#: Key ids go into every object's key slot, so they are short and ASCII.
MAX_KEY_ID_CHARS = 40
DOCUMENT_VERSION = 1
#: Purposes of HKDF subkeys; never change a label once released (it changes every subkey).
PURPOSE_WRAP = "wrap"
PURPOSE_MAC = "reference-mac"
PURPOSE_DEDUP = "blob-name"
#: Keys the hash chain of the durable audit log (:mod:`xcomstash.observe.audit`).
PURPOSE_AUDIT = "audit-chain"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def _unb64(text: str) -> bytes:
    """Strict base64url: only the url-safe alphabet, at most the right padding, and canonical
    (no stray bits in the last character). Lenient decoding (``urlsafe_b64decode``) would drop
    junk such as spaces, ``+``/``/`` or a pasted-in quote and still hand back 32 bytes, so a
    damaged secret would silently become another key."""
    if not isinstance(text, str) or not text.isascii() or not _B64URL.fullmatch(text):
        raise ValueError("characters outside the base64url alphabet")
    bare = text.rstrip("=")
    if len(text) - len(bare) != (-len(bare) % 4) and text != bare:
        raise ValueError("wrong padding")
    if len(bare) % 4 == 1:
        raise ValueError("impossible length")
    raw = base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
    if _b64(raw) != bare:
        raise ValueError("not canonical base64url")
    return raw


#: Key ids are short (``k`` + 8 hex digits from :func:`new_key_id`); a longer one is more
#: likely a secret pasted into the wrong field, so errors never show it.
_SHOWN_ID_CHARS = 24


def shown_key_id(key_id: object) -> str:
    """A key id as errors may show it: quoted when it is a plausible id, otherwise only its
    length (a secret pasted into ``id`` or passed as a key id must never reach a log)."""
    if isinstance(key_id, str) and valid_key_id(key_id) and len(key_id) <= _SHOWN_ID_CHARS:
        return repr(key_id)
    length = len(key_id) if isinstance(key_id, str) else 0
    return f"<an id of {length} characters, not shown>" if isinstance(key_id, str) else "<no id>"


def new_key_id() -> str:
    return "k" + secrets.token_hex(4)


def valid_key_id(key_id: object) -> bool:
    return (
        isinstance(key_id, str)
        and 0 < len(key_id) <= MAX_KEY_ID_CHARS
        and key_id.isascii()
        and all(c.isalnum() or c in "-_." for c in key_id)
    )


@dataclass(frozen=True)
class Key:
    id: str
    secret: bytes = field(repr=False)
    created: str = ""

    def __post_init__(self) -> None:
        if not valid_key_id(self.id):
            raise ConfigError(
                f"key id {shown_key_id(self.id)} is invalid: 1-{MAX_KEY_ID_CHARS} ASCII letters, "
                "digits, '-', '_' or '.'"
            )
        if len(self.secret) != KEY_BYTES:
            raise ConfigError(f"key {shown_key_id(self.id)} must be {KEY_BYTES} bytes, not {len(self.secret)}")

    @classmethod
    def generate(cls, key_id: str | None = None) -> Key:
        created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return cls(key_id or new_key_id(), secrets.token_bytes(KEY_BYTES), created)

    def subkey(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose, derived with HKDF-SHA256 (cached per key)."""
        return self._subkeys[purpose]

    @cached_property
    def _subkeys(self) -> dict[str, bytes]:
        return {
            p: HKDF(
                algorithm=hashes.SHA256(),
                length=KEY_BYTES,
                salt=b"xcomstash-hkdf-salt-v1",
                info=b"xcomstash/v1/" + p.encode(),
            ).derive(self.secret)
            for p in (PURPOSE_WRAP, PURPOSE_MAC, PURPOSE_DEDUP, PURPOSE_AUDIT)
        }


@dataclass(frozen=True)
class Keyset:
    """A primary key (used for everything new) and older keys (accepted when reading)."""

    primary_id: str
    keys: tuple[Key, ...]

    def __post_init__(self) -> None:
        ids = [k.id for k in self.keys]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise ConfigError(f"keyset has duplicate key ids: {', '.join(map(shown_key_id, dupes))}")
        if self.primary_id not in ids:
            raise ConfigError(
                f"keyset primary {shown_key_id(self.primary_id)} is not one of its keys "
                f"({', '.join(map(shown_key_id, ids))})"
            )

    @property
    def primary(self) -> Key:
        return self.get(self.primary_id)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(k.id for k in self.keys)

    def get(self, key_id: str) -> Key:
        for key in self.keys:
            if key.id == key_id:
                return key
        raise KeyUnavailableError(
            f"key {shown_key_id(key_id)} is not in this keyset (holds {', '.join(self.ids)}): the value was "
            "encrypted under a key this worker does not have (another team's keyset, or a key "
            "removed before its objects were re-wrapped)"
        )

    # ------------------------------------------------------------- rotation

    @classmethod
    def generate(cls) -> Keyset:
        key = Key.generate()
        return cls(key.id, (key,))

    def rotated(self, new: Key | None = None) -> Keyset:
        """A new primary key in front; every older key stays for reading (no downtime)."""
        key = new or Key.generate()
        return Keyset(key.id, (key, *self.keys))

    def without(self, key_id: str) -> Keyset:
        """Drop an old key (after ``xcomstash keys rewrap`` moved its objects to the primary)."""
        if key_id == self.primary_id:
            raise ConfigError(f"cannot remove the primary key {shown_key_id(key_id)}; promote another key first")
        self.get(key_id)
        return Keyset(self.primary_id, tuple(k for k in self.keys if k.id != key_id))

    # --------------------------------------------------------- serialisation

    def to_json(self) -> str:
        doc = {
            "xcomstash_keyset": DOCUMENT_VERSION,
            "primary": self.primary_id,
            "keys": [{"id": k.id, "secret": _b64(k.secret), "created": k.created} for k in self.keys],
        }
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "keyset") -> Keyset:
        """Parse a keyset document; errors name the source but never echo key material."""
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ConfigError(f"{source}: not a JSON keyset document") from None
        if not isinstance(doc, dict) or doc.get("xcomstash_keyset") != DOCUMENT_VERSION:
            raise ConfigError(f"{source}: not an xcomstash keyset (expected \"xcomstash_keyset\": 1)")
        entries, primary = doc.get("keys"), doc.get("primary")
        if not isinstance(entries, list) or not entries or not isinstance(primary, str):
            raise ConfigError(f"{source}: a keyset needs a \"primary\" id and a non-empty \"keys\" list")
        keys = []
        for n, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("secret"), str):
                raise ConfigError(f"{source}: key #{n} needs an \"id\" and a \"secret\"")
            key_id = entry.get("id")
            where = f"{source}: key #{n} (id {shown_key_id(key_id)})"
            if not valid_key_id(key_id):
                raise ConfigError(
                    f"{where}: the id is invalid (1-{MAX_KEY_ID_CHARS} ASCII letters, digits, '-', '_' "
                    "or '.'; a secret in \"id\" by mistake?)"
                )
            try:
                secret = _unb64(entry["secret"])
            except (binascii.Error, ValueError) as exc:
                raise ConfigError(f"{where}: the secret is not strict base64url ({exc})") from None
            if len(secret) != KEY_BYTES:
                raise ConfigError(f"{where}: the secret is {len(secret)} bytes, not {KEY_BYTES}")
            created = entry.get("created", "")
            keys.append(Key(key_id, secret, created if isinstance(created, str) else ""))
        if not valid_key_id(primary):
            raise ConfigError(f"{source}: the primary id {shown_key_id(primary)} is invalid")
        try:
            return cls(primary, tuple(keys))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


# ------------------------------------------------------------------- files


def write_private_file(path: str | os.PathLike[str], data: bytes, *, create_only: bool = False) -> bool:
    """Write ``data`` to ``path`` atomically, readable by its owner only (0600): through a
    private temporary file beside it, so no reader ever sees a partial or briefly
    world-readable file and a crash leaves the previous one intact. ``create_only``: hard-link
    it into place, which fails (returns False, writing nothing) if ``path`` exists, so
    concurrent creators agree on one file. Returns whether ``path`` was written."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if not create_only:
            os.replace(tmp, target)
            return True
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_keyset_file(path: str | os.PathLike[str], keyset: Keyset, *, overwrite: bool = False) -> Path:
    """Write a keyset readable by its owner only (0600), atomically. A new file is never
    written over an existing one unless ``overwrite`` (rotation)."""
    target = Path(path)
    if not write_private_file(target, keyset.to_json().encode(), create_only=not overwrite):
        raise FileExistsError(errno.EEXIST, "keyset file exists", str(target))
    return target


def provision_keyset_file(path: str | os.PathLike[str]) -> Keyset:
    """The keyset at ``path``, created (0600) by the first process that needs it.

    Concurrent first uses agree: the complete document is written to a private temporary
    file and hard-linked into place, which fails if another process got there first; the
    loser then reads the winner's file. A reader never sees a half-written keyset."""
    target = Path(path)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        write_private_file(target, Keyset.generate().to_json().encode(), create_only=True)
    check_private(target)
    return read_keyset_file(target)


def read_keyset_file(path: str | os.PathLike[str]) -> Keyset:
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read keyset file {path}: {exc.strerror}") from None
    return Keyset.from_json(text, source=f"keyset file {path}")


def file_is_private(path: str | os.PathLike[str]) -> bool:
    """True when neither group nor others may read the file (what ``keys generate`` writes)."""
    return not (os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO))


# ------------------------------------------------------------------ sources

#: Resolves a source's argument to keyset JSON; the adapter adds ``variable`` (Airflow
#: Variables, so every configured secrets backend is consulted).
Resolver = Callable[[str], str]


def _from_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"keyset source env:{name}: the environment variable is not set")
    return value


def _from_file(path: str) -> str:
    check_private(path)
    return read_keyset_file(path).to_json()


def check_private(path: str | os.PathLike[str]) -> None:
    """Refuse a keyset file that other users may read, and warn when its group may: every
    key secret is in it, and workers would otherwise load it without a word."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read keyset file {path}: {exc.strerror}") from None
    if mode & stat.S_IRWXO:
        raise ConfigError(
            f"keyset file {path} is readable by other users (mode {stat.S_IMODE(mode):04o}); it holds every "
            f"key secret. Run: chmod 600 {path}"
        )
    if mode & stat.S_IRWXG:
        log.warning(
            "xcomstash: keyset file %s is readable by its group (mode %04o); it holds every key secret "
            "(chmod 600 %s unless the group is meant to hold the keys)", path, stat.S_IMODE(mode), path,
        )


BUILTIN_RESOLVERS: dict[str, Resolver] = {"env": _from_env, "file": _from_file}


def load_keyset(source: str, resolvers: Mapping[str, Resolver] | None = None) -> Keyset:
    """``env:NAME``, ``file:/path`` or (with the Airflow adapter) ``variable:NAME``."""
    kind, sep, arg = source.strip().partition(":")
    table = {**BUILTIN_RESOLVERS, **(resolvers or {})}
    if not sep or not arg or kind not in table:
        raise ConfigError(
            f"keyset source {source!r:.80} must be one of {', '.join(k + ':...' for k in sorted(table))}"
        )
    return Keyset.from_json(table[kind](arg), source=f"keyset {kind}:{arg}")


@dataclass(frozen=True)
class KeyRing:
    """Keysets by DAG id pattern (``fnmatch``, first match wins)."""

    scopes: tuple[tuple[str, Keyset], ...]

    @classmethod
    def single(cls, keyset: Keyset) -> KeyRing:
        return cls((("*", keyset),))

    def for_dag(self, dag_id: str) -> Keyset:
        for pattern, keyset in self.scopes:
            if fnmatch.fnmatchcase(dag_id, pattern):
                return keyset
        raise KeyUnavailableError(
            f"no keyset on this worker covers DAG {dag_id!r} (configured patterns: "
            f"{', '.join(p for p, _ in self.scopes) or 'none'})"
        )

    def keysets(self) -> Iterable[Keyset]:
        return (k for _, k in self.scopes)


def parse_scoped_sources(spec: str) -> list[tuple[str, str]]:
    """``pattern=source`` entries separated by ``;`` or newlines; a bare source means ``*``."""
    out = []
    for raw in spec.replace("\n", ";").split(";"):
        entry = raw.strip()
        if not entry:
            continue
        pattern, eq, source = entry.partition("=")
        if not eq:
            pattern, source = "*", entry
        elif ":" in pattern:  # "file:/a=b" has no pattern: the "=" belongs to the source
            pattern, source = "*", entry
        out.append((pattern.strip() or "*", source.strip()))
    return out


class LazyKeyRing(KeyRing):
    """Keysets by DAG id pattern, each loaded from its source the first time a DAG it covers
    is used: a worker that only runs team B's tasks never reads team A's keyset (and needs no
    access to it). A worker that ends up holding the keysets of several patterns says so once,
    since any task on it could then use all of them."""

    def __init__(self, entries: list[tuple[str, str]], resolvers: Mapping[str, Resolver] | None = None) -> None:
        # KeyRing is frozen: set this subclass's own state around its __setattr__.
        for name, value in (
            ("scopes", ()),
            ("_entries", tuple(entries)),
            ("_resolvers", resolvers),
            ("_loaded", {}),
            ("_lock", threading.Lock()),
            ("_warned", [False]),
        ):
            object.__setattr__(self, name, value)

    def _keyset(self, index: int) -> Keyset:
        keyset = self._loaded.get(index)
        if keyset is not None:
            return keyset
        with self._lock:
            if index not in self._loaded:
                self._loaded[index] = load_keyset(self._entries[index][1], self._resolvers)
                self._warn_if_shared()
            return self._loaded[index]

    def _warn_if_shared(self) -> None:
        patterns = sorted({self._entries[i][0] for i in self._loaded})
        if len(patterns) > 1 and not self._warned[0]:
            self._warned[0] = True
            log.warning(
                "xcomstash: this worker holds the keysets of DAG patterns %s: a task running here can "
                "decrypt and sign values of all of them. To isolate teams, run each team's tasks on "
                "workers (or queues) that can read only that team's keyset.", ", ".join(patterns),
            )

    def for_dag(self, dag_id: str) -> Keyset:
        for index, (pattern, _) in enumerate(self._entries):
            if fnmatch.fnmatchcase(dag_id, pattern):
                return self._keyset(index)
        raise KeyUnavailableError(
            f"no keyset on this worker covers DAG {dag_id!r} (configured patterns: "
            f"{', '.join(p for p, _ in self._entries) or 'none'})"
        )

    def keysets(self) -> Iterable[Keyset]:
        return (self._keyset(i) for i in range(len(self._entries)))

    def __repr__(self) -> str:
        return f"LazyKeyRing(patterns={list(self.patterns)})"

    __eq__ = object.__eq__
    __hash__ = object.__hash__

    @property
    def patterns(self) -> tuple[str, ...]:
        return tuple(p for p, _ in self._entries)


def load_keyring(spec: str, resolvers: Mapping[str, Resolver] | None = None) -> KeyRing | None:
    """The keyring a ``keysets`` option names (keysets loaded on first use), or ``None`` when
    it is empty. The sources' syntax is checked here, so a typo fails at start-up."""
    entries = parse_scoped_sources(spec)
    if not entries:
        return None
    table = {**BUILTIN_RESOLVERS, **(resolvers or {})}
    for _, source in entries:
        kind, sep, arg = source.partition(":")
        if not sep or not arg or kind not in table:
            raise ConfigError(
                f"keyset source {source!r:.80} must be one of {', '.join(k + ':...' for k in sorted(table))}"
            )
    return LazyKeyRing(entries, resolvers)
