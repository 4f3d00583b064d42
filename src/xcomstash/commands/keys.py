"""``xcomstash keys``: create and rotate keyset files, and re-wrap stored objects.

- ``generate FILE``: a new keyset with one key, written 0600 (refuses to overwrite);
- ``rotate FILE``: add a new primary key in front; older keys stay, so values written under
  them stay readable (deploy the rotated file to every worker, then re-wrap);
- ``rewrap``: move every stored object's data key to the primary key (only the 128-byte key
  slot of each object is rewritten: bodies are neither decrypted nor copied through Python
  objects); resumable and repeatable, with progress;
- ``remove FILE KEY_ID``: drop an old key once ``rewrap`` reported nothing left under it;
- ``list FILE``: key ids, which is primary, creation times (never key material).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xcomstash.security.crypto.keyset import Keyset, file_is_private, read_keyset_file, write_keyset_file
from xcomstash.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("keys", help="generate and rotate encryption keysets, re-wrap stored objects")
    keys = parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    gen = keys.add_parser("generate", help="write a new keyset file (mode 0600)")
    gen.add_argument("file", type=Path)
    gen.set_defaults(func=lambda a: generate(a.file))

    rot = keys.add_parser("rotate", help="add a new primary key to a keyset file (old keys stay)")
    rot.add_argument("file", type=Path)
    rot.set_defaults(func=lambda a: rotate(a.file))

    rem = keys.add_parser("remove", help="remove an old (non-primary) key from a keyset file")
    rem.add_argument("file", type=Path)
    rem.add_argument("key_id")
    rem.set_defaults(func=lambda a: remove(a.file, a.key_id))

    lst = keys.add_parser("list", help="show key ids, the primary and creation times")
    lst.add_argument("file", type=Path)
    lst.set_defaults(func=lambda a: list_keys(a.file))

    try:
        from xcomstash.commands import rewrap as _rewrap
    except ImportError:  # pragma: no cover - rewrap lives with the object format
        return
    _rewrap.register(keys)


def _fail(message: str) -> int:
    print(f"xcomstash keys: {message}", file=sys.stderr)
    return 1


def generate(path: Path) -> int:
    keyset = Keyset.generate()
    try:
        write_keyset_file(path, keyset)
    except FileExistsError:
        return _fail(f"{path} exists; use 'xcomstash keys rotate {path}' to add a key")
    except OSError as exc:
        return _fail(f"cannot write {path}: {exc.strerror}")
    print(f"wrote {path} (mode 0600) with primary key {keyset.primary_id}")
    print(f"point workers at it: AIRFLOW__XCOMSTASH__KEYSETS=file:{path.resolve()}")
    return 0


def _load(path: Path) -> Keyset:
    keyset = read_keyset_file(path)
    if not file_is_private(path):
        print(f"warning: {path} is readable by group or others; chmod 600 it", file=sys.stderr)
    return keyset


def rotate(path: Path) -> int:
    try:
        keyset = _load(path)
    except ConfigError as exc:
        return _fail(str(exc))
    rotated = keyset.rotated()
    write_keyset_file(path, rotated, overwrite=True)
    print(f"{path}: new primary key {rotated.primary_id}; still readable: {', '.join(keyset.ids)}")
    print("deploy this file to every worker, then run 'xcomstash keys rewrap' to move old objects")
    return 0


def remove(path: Path, key_id: str) -> int:
    try:
        keyset = _load(path)
        smaller = keyset.without(key_id)
    except ConfigError as exc:
        return _fail(str(exc))
    except Exception as exc:  # KeyUnavailableError: no such key
        return _fail(str(exc))
    write_keyset_file(path, smaller, overwrite=True)
    print(f"{path}: removed {key_id}; keys now {', '.join(smaller.ids)} (primary {smaller.primary_id})")
    return 0


def list_keys(path: Path) -> int:
    try:
        keyset = _load(path)
    except ConfigError as exc:
        return _fail(str(exc))
    for key in keyset.keys:
        mark = "primary" if key.id == keyset.primary_id else "older"
        print(f"{key.id}\t{mark}\t{key.created or '-'}")
    return 0
