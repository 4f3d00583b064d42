"""Reading values written by Airflow's common.io ``XComObjectStorageBackend``.

That backend stores a plain string path in the xcom row:
``<[common.io] xcom_objectstorage_path>/<dag_id>/<run_id>/<task_id>/<uuid>[.gz]``. After
switching to xcomstash those rows stay readable (until ``xcomstash migrate`` turns them into
references) as long as the common.io path is still configured. Unlike common.io we never hand
back the path when the object is gone: a missing object is an :class:`ObjectMissingError`.

Such a row is an unsigned pointer that anyone who may write XComs can set, so it is accepted
only in a narrow shape, checked on the path's segments rather than on its text: directly
under the base (no ``..``, ``.``, empty or backslashed segments; on a local disk, no symlink
out of it), in the directory of the XCom being read or purged (its DAG, run and task), and,
where references must be signed, only while ``accept_unsigned_references`` names the time
signing was switched on and for an object older than that.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from xcomstash.errors import IntegrityError, ObjectMissingError, ReferenceSignatureError
from xcomstash.security.guard import Guard
from xcomstash.security.readers import Expected

#: The file name common.io gives an object: a UUID and an optional compression suffix.
_NAME = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(\.json)?(\.[a-z0-9]{1,8})?$")
_BAD_SEGMENTS = {"", ".", ".."}


def _base_text() -> str:
    from xcomstash.airflow.settings import _conf

    return (_conf().get("common.io", "xcom_objectstorage_path", fallback="") or "").rstrip("/")


def looks_legacy(value: Any) -> bool:
    """Whether a row's value is shaped like a common.io path under the configured base
    (cheap: no path objects, no store access)."""
    if not isinstance(value, str) or len(value) > 2048 or "://" not in value[:16]:
        return False
    base = _base_text()
    return bool(base) and value.startswith(base + "/")


def unconfigured_row(value: Any, expected: Expected | None) -> str | None:
    """Why ``value`` is a common.io row that cannot be read here, or ``None``.

    A common.io path written for exactly the XCom being read (its last four segments are that
    XCom's DAG, run, task and a common.io file name) that is not under the configured base:
    the ``[common.io] xcom_objectstorage_path`` it was written under is no longer set (or was
    changed). Handing the path string to the task instead of the value is the one failure a
    backend must never have, so such a row is an error; any other string is an inline value."""
    if not isinstance(value, str) or len(value) > 2048 or expected is None or expected.dag_id is None:
        return None
    parts = urlsplit(value)
    if not parts.scheme or "://" not in value[:16]:
        return None
    segments = value.split("/")
    if len(segments) < 5 or not _NAME.match(segments[-1]):
        return None
    if [s for s in segments[-4:-1]] != [expected.dag_id, expected.run_id, expected.task_id]:
        return None
    base = _base_text()
    if base and value.startswith(base + "/"):
        return None
    where = f"it is set to {base!r}" if base else "it is not set"
    return (
        f"the row of {expected.dag_id}/{expected.run_id}/{expected.task_id} holds a path written by "
        f"Airflow's common.io object-storage backend ({value!r:.300}), but [common.io] "
        f"xcom_objectstorage_path does not cover it ({where}): restore that setting to the base the "
        "path starts with (AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH), then run 'xcomstash migrate'"
    )


def legacy_segments(value: str) -> list[str] | None:
    """The path segments below the base, or ``None`` if ``value`` is not a canonical path
    directly under it (the check common.io made lexically, so ``<base>/../x`` passed)."""
    base = _base_text()
    if not base or not urlsplit(value).scheme or not value.startswith(base + "/"):
        return None
    rest = value[len(base) + 1:]
    segments = rest.split("/")
    if any(s in _BAD_SEGMENTS or "\\" in s or "\x00" in s or "%" in s for s in segments):
        return None
    return segments


class LegacyRow:
    """A checked common.io row: where its object is, and the XCom it was written for."""

    def __init__(self, value: str, segments: list[str]) -> None:
        self.uri = value
        self.segments = segments

    def check_belongs_to(self, expected: Expected | None) -> None:
        """The row must point into the directory common.io writes for the XCom asked for."""
        if expected is None or expected.dag_id is None:
            raise ReferenceSignatureError(
                f"common.io row {self.uri!r:.300} is not read outside a known XCom (no DAG run to check it against)"
            )
        if len(self.segments) != 4 or not _NAME.match(self.segments[3]):
            raise ReferenceSignatureError(
                f"common.io row {self.uri!r:.300} is not a path common.io writes (<dag>/<run>/<task>/<uuid>)"
            )
        for name, wanted, got in zip(("dag_id", "run_id", "task_id"), (expected.dag_id, expected.run_id, expected.task_id), self.segments):
            if wanted is not None and got != wanted:
                raise ReferenceSignatureError(
                    f"common.io row in the row of {name}={wanted!r} points at an object of {name}={got!r} "
                    f"({self.uri!r:.300}): the row was edited"
                )

    def path(self) -> Any:
        """The object's path; on a local disk, resolved and still under the base."""
        from airflow.sdk import ObjectStoragePath

        base = ObjectStoragePath(_base_text())
        path = base.joinpath(*self.segments)
        if urlsplit(self.uri).scheme == "file":
            real_base = os.path.realpath(urlsplit(_base_text()).path)
            real = os.path.realpath(urlsplit(self.uri).path)
            if os.path.commonpath([real_base, real]) != real_base:
                raise ReferenceSignatureError(f"common.io row {self.uri!r:.300} leads outside the common.io base")
        return path


def parse(value: Any) -> LegacyRow | None:
    """A common.io row under the configured base, else ``None`` (not one: read as inline).
    A value that names the base but is not canonical is refused, never read as inline."""
    if not looks_legacy(value):
        return None
    segments = legacy_segments(value)
    if segments is None:
        raise ReferenceSignatureError(f"common.io row {value!r:.300} is not a plain path under the common.io base")
    return LegacyRow(value, segments)


def admit(row: LegacyRow, guard: Guard, expected: Expected | None) -> Any:
    """Every check before the object is opened; returns its path."""
    row.check_belongs_to(expected)
    path = row.path()
    config = guard.config
    if config.sign_references:
        if config.unsigned_before is None:
            raise ReferenceSignatureError(
                f"common.io row {row.uri!r:.300} is unsigned, and this deployment requires signed references: "
                "run 'xcomstash migrate' with [xcomstash] accept_unsigned_references set to the time signing "
                "was switched on"
            )
        guard.admit_unsigned_object(_modified(path), row.uri)
    return path


def checked_path(value: Any, coordinate: Any, guard: Guard) -> Any | None:
    """For maintenance (``xcomstash migrate``): the object path of a common.io row of the
    XCom ``coordinate``, after every check a read makes; ``None`` when the value is not a
    common.io row. A row that fails a check raises (and is not migrated or deleted)."""
    row = parse(value)
    if row is None:
        return None
    return admit(row, guard, Expected(**coordinate.as_dict()))


def _modified(path: Any) -> float | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ObjectMissingError("common.io XCom object is missing", uri=str(path)) from None
    for field in ("mtime", "LastModified", "last_modified", "updated", "modified"):
        value = info.get(field) if isinstance(info, dict) else getattr(info, field, None)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    st_mtime = getattr(info, "st_mtime", None)
    return float(st_mtime) if st_mtime is not None else None


def read(path: Any) -> Any:
    from airflow.utils.json import XComDecoder

    try:
        with path.open(mode="rb", compression="infer") as f:
            return json.load(f, cls=XComDecoder)
    except FileNotFoundError:
        raise ObjectMissingError("common.io XCom object is missing", uri=str(path)) from None
    except (ValueError, EOFError, OSError) as exc:
        raise IntegrityError(f"common.io XCom object unreadable: {exc}", uri=str(path)) from None


def purge(path: Any) -> None:
    path.unlink(missing_ok=True)
