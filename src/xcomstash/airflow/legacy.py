"""Reading values written by Airflow's common.io ``XComObjectStorageBackend``.

That backend stores a plain string path (``s3://.../<uuid>.json[.gz]``) in the xcom row. After
switching to xcomstash those rows stay readable as long as ``[common.io]
xcom_objectstorage_path`` is still configured. Unlike common.io we never hand back the path
when the object is gone: a missing object is an :class:`ObjectMissingError`.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from xcomstash.errors import IntegrityError, ObjectMissingError


def _base_path() -> Any | None:
    from xcomstash.airflow.settings import _conf

    base = _conf().get("common.io", "xcom_objectstorage_path", fallback="") or ""
    if not base:
        return None
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(base)


def legacy_path(value: Any) -> Any | None:
    """The object path if ``value`` is a common.io reference under its configured base."""
    if not isinstance(value, str) or "://" not in value[:16] or len(value) > 2048:
        return None
    if not urlsplit(value).scheme:
        return None
    base = _base_path()
    if base is None:
        return None
    from airflow.sdk import ObjectStoragePath

    try:
        if not ObjectStoragePath(value).is_relative_to(base):
            return None
    except (TypeError, ValueError):
        return None
    return base / value.replace(str(base), "", 1).lstrip("/")


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
