"""Frame an encoded value into one self-describing object and place it in the store.

frame:   preamble (header) -> [key slot] -> framed body (compressed, hashed, [sealed]) -> trailer
place:   a per-XCom object at a deterministic key, or (dedup) a content-addressed blob of the
         run plus a link naming this XCom
publish: atomically; a reader sees the old object or the new one, never a partial one

Returns the :class:`Reference` that will go into the xcom row (unsigned: signing is the
guard's last stage of the push).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Callable

from xcomstash.codecs.base import Codec, short_type_name
from xcomstash.config import StashConfig
from xcomstash.coordinate import (
    XComCoordinate,
    hex_of,
    parse_blob_key,
    parse_link_key,
    run_links_prefix,
    streamed_blob_key,
)
from xcomstash.errors import StoreError
from xcomstash.format import container
from xcomstash.format.compression import resolve as resolve_compression
from xcomstash.format.frames import FrameError, FrameWriter
from xcomstash.format.reference import Reference, clip_summary
from xcomstash.pipeline.pools import CallerFirst, LazyPool
from xcomstash.security.guard import Guard
from xcomstash.stores.base import PendingObject, Store


@dataclass(frozen=True)
class Placed:
    reference: Reference
    #: Uncompressed payload bytes (what the codec produced), for traces and metrics.
    raw_bytes: int
    #: Seconds spent encrypting frames (0 for a plaintext object), for metrics.
    crypto_seconds: float = 0.0
    #: Locations of a replicated store that failed while the push still reached its quorum
    #: (``"replica:<i>: <error type>"``), for the event's ``failover``.
    missed: tuple[str, ...] = ()


class Placer:
    def __init__(self, store: Store, config: StashConfig, guard: Guard, frames: LazyPool) -> None:
        self.store = store
        self.config = config
        self.guard = guard
        self.frames = frames

    def place(
        self,
        coordinate: XComCoordinate,
        codec: Codec,
        value: Any,
        summary: str,
        write_body: Callable[[Any], Any],
        check_size: Callable[..., None] | None = None,
    ) -> Placed:
        envelope = self.guard.sealer(coordinate)
        # Encrypted objects are never deduplicated: their bytes differ on every write (fresh
        # data key and nonces), so content addressing finds nothing to share; and a
        # content-derived blob name would tell who can list the bucket which values are equal.
        dedup = self.config.dedup and envelope is None
        # Nor compressed, unless their DAG opts in: compressing a secret next to data someone
        # else chose turns the stored size into an oracle for the secret (CRIME). Their frames
        # are padded besides (see xcomstash.format.frames), so sizes come in buckets.
        compression = resolve_compression(self.config.compression, self.store.capabilities.local)
        if envelope is not None and not self.guard.compresses_encrypted(coordinate.dag_id):
            compression = "none"
        header = container.ObjectHeader(
            codec=codec.name,
            compression=compression,
            python_type=short_type_name(value),
            codec_meta=codec.meta(value),
            # A blob may serve several XComs of the run: its header names only the run, so that
            # identical payloads give identical bytes. The links name the XComs.
            xcom={"dag_id": coordinate.dag_id, "run_id": coordinate.run_id} if dedup else coordinate.as_dict(),
            encryption=envelope.to_header() if envelope is not None else None,
            hash=self.config.hash,
        )
        head = container.preamble(header)
        slot, cipher = b"", None
        if envelope is not None:
            slot, cipher = self.guard.seal(envelope, head[container.PREAMBLE_SIZE :], coordinate)
        if dedup:
            staged = streamed_blob_key(coordinate.run_prefix(), uuid.uuid4().hex)
            with self.store.new_object(staged) as pending:
                body, tail = self._frame(pending, header, head, write_body, b"", None, check_size, compression)
                digest = container.root_digest(head, tail, header.hash)
                key = self._publish_blob(pending, coordinate, digest, len(head) + body.body_size + len(tail))
            holders, missed = getattr(pending, "holders", None), getattr(pending, "missed", ())
        else:
            key = coordinate.object_key()
            with self.store.writer(key) as sink:
                body, tail = self._frame(sink, header, head, write_body, slot, cipher, check_size, compression)
            digest = container.root_digest(head, tail, header.hash)
            holders, missed = getattr(sink, "holders", None), getattr(sink, "missed", ())
        ref = Reference(
            uri=self.store.uri_for(key),
            size=len(head) + len(slot) + body.body_size + len(tail),
            digest=digest,
            codec=codec.name,
            python_type=header.python_type,
            summary=clip_summary(summary),
            xcom=coordinate,
            # A replicated store names the locations that took the object.
            locations=tuple(holders) if holders else None,
        )
        return Placed(ref, body.raw_size, cipher.seconds if cipher is not None else 0.0, tuple(missed))

    def _frame(
        self,
        sink: Any,
        header: container.ObjectHeader,
        head: bytes,
        write_body: Callable[[Any], Any],
        slot: bytes,
        cipher: Any,
        check_size: Callable[..., None] | None,
        compression: str,
    ) -> tuple[FrameWriter, bytes]:
        """Preamble, key slot, framed body and trailer into ``sink``."""
        sink.write(head)
        if slot:
            sink.write(slot)
        body = FrameWriter(
            sink, compression, self.config.compression_level, CallerFirst(self.frames),
            cipher=cipher, check_size=check_size,
            object_bytes=lambda count: container.outside_body(head, slot, count), hash=header.hash,
        )
        try:
            write_body(body)
            frames = body.finish()
        except BaseException:
            body.abandon()
            raise
        tail = container.trailer(frames, body.body_size, body.raw_size)
        sink.write(tail)
        return body, tail

    # ------------------------------------------------------------ dedup

    def _publish_blob(self, pending: PendingObject, coordinate: XComCoordinate, digest: str, size: int) -> str:
        """Publish a written blob and link this XCom to it; returns the blob's key.

        The link is written before the blob is published, so a purge that lists links never
        misses this XCom's. Where publishing is cheap (a rename, a single PUT) the blob is
        named by its digest, and publishing identical bytes again is harmless. A multipart S3
        upload stays where it was streamed, unless the run already holds the same content:
        then the upload is aborted and this XCom links the existing blob.
        """
        link = coordinate.link_key(digest)
        if pending.cheap_publish:
            key = coordinate.blob_key(digest)
        else:
            key = self._stored_blob(coordinate, digest, size) or pending.staged_key
        with self.store.writer(link) as sink:
            sink.write(key.encode())
        if key == pending.staged_key or pending.cheap_publish:
            pending.publish(key)
        else:
            pending.discard()
        return key

    def _stored_blob(self, coordinate: XComCoordinate, digest: str, size: int) -> str | None:
        """A blob of this run already holding ``digest`` (found through its links), if any."""
        suffix = "/" + hex_of(digest)
        for info in self.store.list(run_links_prefix(coordinate.run_prefix())):
            if not info.key.endswith(suffix):
                continue
            key = self.link_target(info.key)
            if key and self._holds(key, digest, size):
                return key
        return None

    def _holds(self, key: str, digest: str, size: int) -> bool:
        """Whether the object ``key`` is exactly the one with this root digest and size (a
        stale or forged link must never make a push reference other bytes)."""
        try:
            reader = self.store.open_reader(key)
        except StoreError:
            return False
        try:
            return reader.size == size and container.read_layout(reader.size, reader.read_at).digest == digest
        except (StoreError, container.ObjectFormatError, FrameError):
            return False
        finally:
            reader.close()

    def link_target(self, link_key: str) -> str | None:
        """The blob a link points at: its body, else (an empty link) the digest-named blob."""
        parsed = parse_link_key(link_key)
        if parsed is None:
            return None
        try:
            body = self.store.get(link_key).decode()
        except (StoreError, UnicodeDecodeError):
            return None
        target = parse_blob_key(body)
        if target is None or target.run_prefix != parsed.run_prefix:
            return parsed.blob_key if not body else None
        return body

    def likely_key(self, coordinate: XComCoordinate) -> str:
        """The object an XCom most likely references (its newest link's blob, else its
        per-XCom object): read-ahead's guess, which the pull path verifies like any source."""
        links = [info for info in self.store.list(coordinate.links_prefix()) if parse_link_key(info.key)]
        key = self.link_target(max(links, key=lambda i: i.modified).key) if links else None
        return key or coordinate.object_key()
