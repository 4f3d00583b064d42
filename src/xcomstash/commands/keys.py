"""``xcomstash keys``: create and rotate keyset files, re-wrap and re-encrypt stored objects.

Rotation takes two steps, because workers pick up a keyset file at different times: a worker
still holding the old file cannot read values written under a key it has never seen.

- ``generate FILE``: a new keyset with one key, written 0600 (refuses to overwrite);
- ``add FILE``: add a new key that is *not* primary yet (step 1: deploy the file everywhere;
  every worker can then read values under the new key before any exists);
- ``promote FILE KEY_ID``: make that key the primary (step 2, once every worker has it);
- ``rotate FILE``: the same as ``add`` (``--promote-now`` also promotes at once, which is only
  safe when every process reads this very file);
- ``rewrap``: move every stored object's data key to the primary key and re-sign references;
  resumable and repeatable, with progress;
- ``reencrypt``: after a key may have leaked: give objects a fresh data key and re-encrypt
  every frame (a re-wrap keeps the data key);
- ``remove FILE KEY_ID``: drop an old key, refused while any object or reference still needs it;
- ``list FILE``: key ids, which is primary, creation times (never key material).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from xcomstash.errors import ConfigError, XComStashError
from xcomstash.security.crypto.keyset import (
    Key,
    Keyset,
    file_is_private,
    read_keyset_file,
    shown_key_id,
    write_keyset_file,
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("keys", help="generate and rotate encryption keysets, re-wrap stored objects")
    keys = parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    gen = keys.add_parser("generate", help="write a new keyset file (mode 0600)")
    gen.add_argument("file", type=Path)
    gen.set_defaults(func=lambda a: generate(a.file))

    add = keys.add_parser("add", help="add a new key, not yet primary (rotation step 1)")
    add.add_argument("file", type=Path)
    add.set_defaults(func=lambda a: add_key(a.file))

    pro = keys.add_parser("promote", help="make a key the primary (rotation step 2, once every worker has it)")
    pro.add_argument("file", type=Path)
    pro.add_argument("key_id")
    pro.set_defaults(func=lambda a: promote(a.file, a.key_id))

    rot = keys.add_parser(
        "rotate", help="add a new key (like 'add'; promote it once every worker has the file)"
    )
    rot.add_argument("file", type=Path)
    rot.add_argument(
        "--promote-now", action="store_true",
        help="also make it the primary at once: only safe if every worker reads this very file",
    )
    rot.set_defaults(func=lambda a: rotate(a.file, promote_now=a.promote_now))

    rem = keys.add_parser(
        "remove",
        help="remove an old (non-primary) key; refused while objects or references still need it",
        description=(
            "Remove a key from a keyset file. First checks that nothing still needs it: every "
            "object in the store (its key slot) and every reference in Airflow's xcom table (its "
            "MAC). Slots and MACs that name the key but do not open under it are unreadable "
            "anyway (forged or damaged) and do not block. Run 'xcomstash keys rewrap' until it "
            "reports completion, then remove."
        ),
    )
    rem.add_argument("file", type=Path)
    rem.add_argument("key_id")
    rem.add_argument("--store-url", help="the store to check (default: Airflow's [xcomstash] store_url)")
    rem.add_argument("--api-url", help="read xcom rows through Airflow's REST API instead of the database")
    rem.add_argument("--api-token", help="bearer token for --api-url (default: $XCOMSTASH_API_TOKEN)")
    rem.add_argument(
        "--unchecked", action="store_true",
        help="remove without checking the store and the xcom table (values still under the key become unreadable)",
    )
    rem.set_defaults(func=remove_command)

    lst = keys.add_parser("list", help="show key ids, the primary and creation times")
    lst.add_argument("file", type=Path)
    lst.set_defaults(func=lambda a: list_keys(a.file))

    from xcomstash.commands import reencrypt as _reencrypt
    from xcomstash.commands import rewrap as _rewrap

    _rewrap.register(keys)
    _reencrypt.register(keys)


def _fail(message: str) -> int:
    print(f"xcomstash keys: {message}", file=sys.stderr)
    return 1


def generate(path: Path) -> int:
    keyset = Keyset.generate()
    try:
        write_keyset_file(path, keyset)
    except FileExistsError:
        return _fail(f"{path} exists; use 'xcomstash keys add {path}' to add a key")
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


def add_key(path: Path) -> int:
    """Rotation step 1: a new key every worker learns before anything is written under it."""
    try:
        keyset = _load(path)
    except ConfigError as exc:
        return _fail(str(exc))
    key = Key.generate()
    write_keyset_file(path, Keyset(keyset.primary_id, (*keyset.keys, key)), overwrite=True)
    print(f"{path}: added key {key.id} (not primary yet; primary is still {keyset.primary_id})")
    print("step 1: deploy this file to every worker (and the scheduler/API server hosts)")
    print(f"step 2: once all of them have it: xcomstash keys promote {path} {key.id}")
    return 0


def promote(path: Path, key_id: str) -> int:
    """Rotation step 2: new values use ``key_id`` from now on; older keys stay for reading."""
    try:
        keyset = _load(path)
        keyset.get(key_id)
    except XComStashError as exc:
        return _fail(str(exc))
    if key_id == keyset.primary_id:
        print(f"{path}: {key_id} is already the primary")
        return 0
    ordered = (keyset.get(key_id), *(k for k in keyset.keys if k.id != key_id))
    write_keyset_file(path, Keyset(key_id, ordered), overwrite=True)
    print(f"{path}: primary key is now {key_id}; still readable: {', '.join(k for k in keyset.ids if k != key_id)}")
    print("deploy this file to every worker, then run 'xcomstash keys rewrap' to move old objects and references")
    return 0


def rotate(path: Path, *, promote_now: bool = False) -> int:
    """``add``, and with ``promote_now`` the old one-step rotation (add and promote at once)."""
    if not promote_now:
        print(
            "note: 'keys rotate' now only adds the new key (step 1); promote it with "
            "'xcomstash keys promote' once every worker has the file",
            file=sys.stderr,
        )
        return add_key(path)
    try:
        keyset = _load(path)
    except ConfigError as exc:
        return _fail(str(exc))
    rotated = keyset.rotated()
    write_keyset_file(path, rotated, overwrite=True)
    print(f"{path}: new primary key {rotated.primary_id}; still readable: {', '.join(keyset.ids)}")
    print(
        "warning: workers that do not have this file yet cannot read values written under "
        f"{rotated.primary_id} (KeyUnavailableError) until they get it",
        file=sys.stderr,
    )
    print("deploy this file to every worker, then run 'xcomstash keys rewrap' to move old objects")
    return 0


def remove_command(args: argparse.Namespace) -> int:
    return remove(
        args.file, args.key_id, store_url=args.store_url, unchecked=args.unchecked,
        api_url=args.api_url, api_token=args.api_token,
    )


def remove(
    path: Path,
    key_id: str,
    *,
    store_url: str | None = None,
    unchecked: bool = False,
    api_url: str | None = None,
    api_token: str | None = None,
    store: Any = None,
    rows: Any = None,
) -> int:
    """Drop ``key_id`` from the file, after checking that no object or reference needs it."""
    import json

    try:
        keyset = _load(path)
        smaller = keyset.without(key_id)
    except XComStashError as exc:
        return _fail(str(exc))
    if not unchecked:
        from xcomstash.maintenance.keyuse import KeyUse, objects_needing, references_needing

        use = KeyUse(key_id)
        try:
            if store is None:
                from xcomstash.commands.audit import open_configured_store

                store = open_configured_store(store_url)
            if rows is None:
                rows = _rows(api_url, api_token)
            objects_needing(store, keyset, key_id, use)
            references_needing(rows, keyset, key_id, use)
        except Exception as exc:
            return _fail(
                f"cannot check whether key {shown_key_id(key_id)} is still needed "
                f"({type(exc).__name__}: {exc}); nothing was removed. Give --store-url (and run "
                "where Airflow's database or --api-url is reachable), or --unchecked to remove it anyway"
            )
        if use.in_use:
            print(json.dumps(use.to_json(), indent=2))
            return _fail(
                f"key {key_id} is still needed by {use.objects} object(s) and {use.references} "
                f"reference(s)" + (f", {use.unchecked_objects} object(s) could not be read" if use.unchecked_objects else "")
                + "; run 'xcomstash keys rewrap' until it reports complete, then try again. Nothing was removed."
            )
        print(
            f"checked: no object or reference needs {key_id}"
            + (f" ({use.unreadable_objects} unreadable object(s) and {use.invalid_references} invalid "
               "reference(s) name it: they cannot be read with or without it)"
               if use.unreadable_objects or use.invalid_references else "")
        )
    write_keyset_file(path, smaller, overwrite=True)
    print(f"{path}: removed {key_id}; keys now {', '.join(smaller.ids)} (primary {smaller.primary_id})")
    return 0


def _rows(api_url: str | None, api_token: str | None) -> Any:
    import os

    if api_url:
        from xcomstash.airflow.row_sources import RestRows

        return RestRows(api_url, token=api_token or os.environ.get("XCOMSTASH_API_TOKEN"))
    from xcomstash.airflow.row_sources import DatabaseRows

    return DatabaseRows()


def list_keys(path: Path) -> int:
    try:
        keyset = _load(path)
    except ConfigError as exc:
        return _fail(str(exc))
    primary = keyset.primary
    for key in keyset.keys:
        if key.id == primary.id:
            mark = "primary"
        elif key.created and primary.created and key.created > primary.created:
            mark = "added"  # not primary yet: promote it once every worker has the file
        else:
            mark = "older"
        print(f"{key.id}\t{mark}\t{key.created or '-'}")
    return 0
