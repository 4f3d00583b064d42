"""What the metadata database and the store hold, read the way an operator would: xcom rows
with psycopg2, objects and unfinished multipart uploads with boto3, straight from the servers.

The alive set is the set of object URIs named by xcom rows; an orphan is a stored value object
(``*.xcs``) that no row names. Link markers (``.links/...``) and other bookkeeping objects of
the store layout are counted separately, not as orphans.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tests.deployment.stack import BUCKET, PREFIX, Deployment

MARKER = "__xcomstash__"


@dataclass
class XComRow:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    key: str
    value: Any

    @property
    def reference(self) -> dict[str, Any] | None:
        return self.value if isinstance(self.value, dict) and MARKER in self.value else None


@dataclass
class StoreState:
    rows: list[XComRow]
    objects: dict[str, int]  # key (without prefix) -> size
    uploads: list[dict[str, Any]]  # unfinished multipart uploads
    referenced: set[str] = field(default_factory=set)  # keys named by rows

    @property
    def value_objects(self) -> dict[str, int]:
        return {k: s for k, s in self.objects.items() if k.endswith(".xcs")}

    @property
    def other_objects(self) -> dict[str, int]:
        return {k: s for k, s in self.objects.items() if not k.endswith(".xcs")}

    @property
    def orphans(self) -> set[str]:
        return set(self.value_objects) - self.referenced

    @property
    def dangling(self) -> set[str]:
        """Keys that rows name but the store does not hold."""
        return self.referenced - set(self.objects)

    def size_mismatches(self) -> list[str]:
        out = []
        for row in self.rows:
            ref = row.reference
            if ref is None:
                continue
            key = uri_key(ref["uri"])
            if key in self.objects and self.objects[key] != ref["size"]:
                out.append(f"{key}: row says {ref['size']} bytes, store has {self.objects[key]}")
        return out

    def summary(self) -> dict[str, Any]:
        refs = [r for r in self.rows if r.reference]
        return {
            "xcom_rows": len(self.rows),
            "reference_rows": len(refs),
            "referenced_objects": len(self.referenced),
            "stored_value_objects": len(self.value_objects),
            "stored_value_bytes": sum(self.value_objects.values()),
            "other_objects": len(self.other_objects),
            "orphans": len(self.orphans),
            "dangling": len(self.dangling),
            "unfinished_uploads": len(self.uploads),
        }


def uri_key(uri: str) -> str:
    """``s3://xcom/deploy/<key>`` -> ``<key>`` (the key under the store prefix)."""
    head = f"s3://{BUCKET}/{PREFIX}/"
    if not uri.startswith(head):
        raise ValueError(f"reference outside the store root {head}: {uri}")
    return uri[len(head):]


def xcom_rows(stack: Deployment, dag_ids: list[str] | None = None) -> list[XComRow]:
    import psycopg2

    assert stack.database_url
    dsn = stack.database_url.replace("postgresql+psycopg2://", "postgresql://", 1)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        sql = "select dag_id, run_id, task_id, map_index, key, value from xcom"
        if dag_ids:
            cur.execute(sql + " where dag_id = any(%s)", (dag_ids,))
        else:
            cur.execute(sql)
        rows = []
        for dag_id, run_id, task_id, map_index, key, value in cur.fetchall():
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            rows.append(XComRow(dag_id, run_id, task_id, map_index, key, value))
    conn.close()
    return rows


def list_objects(stack: Deployment) -> dict[str, int]:
    client = stack.s3_client()
    out: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX + "/"):
        for item in page.get("Contents", []):
            out[item["Key"][len(PREFIX) + 1:]] = int(item["Size"])
    return out


def unfinished_uploads(stack: Deployment) -> list[dict[str, Any]]:
    client = stack.s3_client()
    response = client.list_multipart_uploads(Bucket=BUCKET, Prefix=PREFIX + "/")
    return [{"key": u["Key"], "upload_id": u["UploadId"]} for u in response.get("Uploads", [])]


def snapshot(stack: Deployment) -> StoreState:
    rows = xcom_rows(stack)
    state = StoreState(rows=rows, objects=list_objects(stack), uploads=unfinished_uploads(stack))
    state.referenced = {uri_key(r.reference["uri"]) for r in rows if r.reference}
    return state


def corrupt(stack: Deployment, key: str, how: str) -> int:
    """Damage a stored object in place: ``flip`` one byte in the middle, ``truncate`` the
    last 100 bytes. Returns the object's original size."""
    client = stack.s3_client()
    full = f"{PREFIX}/{key}"
    body = bytearray(client.get_object(Bucket=BUCKET, Key=full)["Body"].read())
    size = len(body)
    if how == "flip":
        body[size // 2] ^= 0x01
    elif how == "truncate":
        del body[-100:]
    else:
        raise ValueError(how)
    client.put_object(Bucket=BUCKET, Key=full, Body=bytes(body))
    return size
