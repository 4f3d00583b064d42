"""What a store made of several stores (replicas, per-DAG stores) does the same way whatever
the members are for: combine their capabilities, list their objects once, and hand out their
unfinished uploads under tokens that say which member each belongs to."""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

from xcomstash.errors import StoreError
from xcomstash.stores.base import Capabilities, ObjectInfo, Store, UnfinishedUpload


def combined_capabilities(members: Sequence[Store]) -> Capabilities:
    """Cheap only if cheap in every member; multipart if any member streams in parts."""
    caps = [m.capabilities for m in members]
    return Capabilities(
        local=all(c.local for c in caps),
        ranged_reads=all(c.ranged_reads for c in caps),
        listing=all(c.listing for c in caps),
        cheap_publish=all(c.cheap_publish for c in caps),
        multipart=any(c.multipart for c in caps),
        conditional_create=all(c.conditional_create for c in caps),
    )


def list_once(members: Sequence[Store], prefix: str) -> Iterator[ObjectInfo]:
    """Every object any member holds, listed once (as the first member that has it)."""
    seen: set[str] = set()
    for member in members:
        for info in member.list(prefix):
            if info.key not in seen:
                seen.add(info.key)
                yield info


def unfinished_uploads(members: Sequence[Store]) -> Iterator[UnfinishedUpload]:
    """Every member's unfinished uploads, each token prefixed with the member's index."""
    for index, member in enumerate(members):
        for upload in member.unfinished_uploads():
            yield dataclasses.replace(upload, token=f"{index}:{upload.token}")


def remove_unfinished(members: Sequence[Store], upload: UnfinishedUpload, root_uri: str) -> None:
    """Remove an upload :func:`unfinished_uploads` listed, in the member its token names."""
    index, _, token = upload.token.partition(":")
    if not index.isdigit() or int(index) >= len(members):
        raise StoreError(f"not an unfinished upload of a store of {root_uri}: {upload.token!r}")
    members[int(index)].remove_unfinished(dataclasses.replace(upload, token=token))
