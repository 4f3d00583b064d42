"""The put/get pipeline. Knows nothing of Airflow.

push: value -> [rules, scan, readers] -> route -> codec -> compress -> [encrypt] -> store.writer
      -> reference [signed]
pull: reference -> [MAC, expected XCom, readers] -> validate -> store.get -> verify size+digest
      -> parse -> [decrypt] -> decompress -> codec

The bracketed steps run only when the engine has a :class:`~xcomstash.security.guard.Guard` (keys,
value rules or an audit log configured); an engine without one takes the plain path unchanged.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from xcomstash.format import container
from xcomstash.pipeline import route
from xcomstash.security.readers import Restricted
from xcomstash.codecs import CodecRegistry, default_registry
from xcomstash.codecs.base import Codec, short_type_name
from xcomstash.codecs.json import PLAIN_JSON, JsonCodec, StructureConverter, json_summary
from xcomstash.config import StashConfig
from xcomstash.coordinate import (
    LINKS,
    XComCoordinate,
    hex_of,
    parse_blob_key,
    parse_link_key,
    streamed_blob_key,
)
from xcomstash.codecs.arrow import ArrowTableCodec
from xcomstash.codecs.pandas import PandasDataFrameCodec
from xcomstash.format.frames import FrameError, FrameWriter, read_frames
from xcomstash.pipeline.selection import FramedFile, PartialRead, read_arrow_subset, rows_of_range_index, select_in_memory
from xcomstash.pipeline.readahead import MAX_OBJECT_BYTES as MAX_PREFETCH_BYTES
from xcomstash.pipeline.readahead import MemoryReader, ReadAhead
from xcomstash.stores.cache import ReadCache
from xcomstash.errors import (
    AccessDeniedError,
    DecodeError,
    DecryptionError,
    IntegrityError,
    KeyUnavailableError,
    InvalidReferenceError,
    ReadError,
    StoreError,
    StoreReadError,
    UnsupportedTypeError,
    XComStashError,
)
from xcomstash.format.reference import Reference, clip_summary, is_reference
from xcomstash.stores import Store, open_store
from xcomstash.observe.trace import TraceEvent, emit, log

if TYPE_CHECKING:
    from xcomstash.security.readers import Expected, Readers
    from xcomstash.security.crypto.keyset import Keyset
    from xcomstash.security.crypto.stream import FrameCipher
    from xcomstash.security.rules import Effective
    from xcomstash.security.guard import Guard

#: Codecs whose values are tables (scanned by sampled string columns) or raw bytes.
_TABLE_CODECS = ("pandas.arrow-ipc", "polars.arrow-ipc", "arrow.ipc")
_BYTES_CODECS = ("bytes",)


#: Objects fetched at once when a task pulls many values (a mapped task's outputs).
FANIN_WORKERS = 8


class Engine:
    def __init__(
        self,
        config: StashConfig,
        store: Store | None = None,
        *,
        registry: CodecRegistry = default_registry,
        converter: StructureConverter = PLAIN_JSON,
        s3_client_factory: Callable[[str | None], Any] | None = None,
        trace_file: str | None = None,
        guard: Guard | None = None,
    ) -> None:
        self.config = config
        #: Security checks, keys and audit (see :mod:`xcomstash.security.guard`); None: plain path.
        self.guard = guard
        self.store = store or open_store(config.store_url, s3_client_factory=s3_client_factory)
        self.registry = registry
        self.converter = converter
        self.json_codec = JsonCodec(converter)
        self.trace_file = trace_file
        self._threads: ThreadPoolExecutor | None = None
        self._fanin: ThreadPoolExecutor | None = None
        self.cache = (
            ReadCache(config.cache_dir, config.cache_max_bytes)
            if config.cache_dir and not self.store.is_local
            else None
        )
        self._readahead = ReadAhead(self._prefetch, self._fanin_pool()) if config.read_ahead else None

    # ----------------------------------------------------------------- push

    def serialize(self, value: Any, coordinate: XComCoordinate) -> Any:
        """What goes into the xcom row: the value's JSON structure (inline) or a reference."""
        if self.guard is None and isinstance(value, Restricted):
            from xcomstash.security.guard import Guard, SecurityConfig

            self.guard = Guard(SecurityConfig())  # readers need the checked path
        if self.guard is not None:
            if self.guard.checks_push or isinstance(value, Restricted):
                return self._serialize_guarded(value, coordinate)
            return self._serialize_audited(value, coordinate)
        if not self.trace_file:
            return self._serialize(value, coordinate)
        started = time.perf_counter()
        stored = self._serialize(value, coordinate)
        if not is_reference(stored):
            self._trace_inline("push", coordinate, value, stored, started)
        return stored

    def _serialize_audited(self, value: Any, coordinate: XComCoordinate) -> Any:
        """The plain push path, with audit events (no keys, no rules configured)."""
        guard = self.guard
        assert guard is not None
        started = time.perf_counter()
        try:
            stored = self._serialize(value, coordinate)
        except XComStashError as exc:
            from xcomstash.security.guard import outcome_of

            guard.record("push", outcome_of(exc), coordinate, error=exc)
            raise
        if is_reference(stored):
            guard.record("push", "ok", coordinate, uri=stored["uri"], size=stored["size"], digest=stored["digest"])
        else:
            if guard.audits_inline:
                guard.record("push", "ok", coordinate, route="inline")
            if self.trace_file:
                self._trace_inline("push", coordinate, value, stored, started)
        return stored

    def _serialize_guarded(self, value: Any, coordinate: XComCoordinate) -> Any:
        """The push path with rules, scans, readers, encryption, signing and audit."""
        from xcomstash.security.readers import readers_for
        from xcomstash.security.guard import outcome_of

        guard = self.guard
        assert guard is not None
        started = time.perf_counter()
        try:
            eff = guard.rules_for(coordinate.dag_id)
            value, readers = readers_for(value, coordinate, eff.read_scope)
            stored = self._serialize_checked(value, coordinate, eff, readers)
        except XComStashError as exc:
            guard.record("push", outcome_of(exc), coordinate, error=exc)
            raise
        if is_reference(stored):
            guard.record(
                "push", "ok", coordinate, uri=stored["uri"], size=stored["size"], digest=stored["digest"],
                key_id=str(stored.get("mac", "")).partition(":")[0],
            )
        else:
            guard.record("push", "ok", coordinate, route="inline")
            if self.trace_file:
                self._trace_inline("push", coordinate, value, stored, started)
        return stored

    def _serialize_checked(
        self, value: Any, coordinate: XComCoordinate, eff: Effective, readers: Readers | None
    ) -> Any:
        guard = self.guard
        assert guard is not None
        threshold, exclusive = self.config.threshold, self.config.exclusive
        # A value with restricted readers is always offloaded: an inline row has no readers.
        exclusive = exclusive or readers is not None
        what = f"value of XCom {coordinate}"
        codec = self.registry.for_value(value)
        eff.check_type(short_type_name(value), codec.name if codec else JsonCodec.name, codec is None)
        if codec is None:
            structure = guard.screen_structure(eff, self._to_structure(value), what)
            body = self.json_codec.dumps(structure)
            eff.check_size(len(body))
            if not exclusive and len(body) < threshold and not route.collides_with_marker(structure):
                return structure
            ref = self._write(
                coordinate, self.json_codec, value, json_summary(value), lambda sink: sink.write(body), eff=eff
            )
        else:
            kind = "table" if codec.name in _TABLE_CODECS else "bytes" if codec.name in _BYTES_CODECS else ""
            value = guard.screen_value(eff, value, kind, what)
            if codec.inline_when_small and not exclusive:
                size = codec.estimate_size(value)
                if route.route_by_size(size, threshold=threshold, exclusive=False).inline:
                    try:
                        structure = self.converter.to_structure(value)
                    except TypeError:
                        structure = None  # the converter cannot inline this type: store it instead
                    if structure is not None:
                        eff.check_size(len(self.json_codec.dumps(structure)))
                        return structure
            ref = self._write(
                coordinate, codec, value, codec.summary(value), lambda s: codec.encode(value, s), eff=eff
            )
        if readers is not None:
            ref = dataclasses.replace(ref, readers=readers)
        return guard.seal_reference(ref.to_json(), None, coordinate.dag_id)

    def _serialize(self, value: Any, coordinate: XComCoordinate) -> Any:
        threshold, exclusive = self.config.threshold, self.config.exclusive
        codec = self.registry.for_value(value)
        if codec is None:
            if not exclusive and route.trivially_small(value, threshold):
                return self.converter.to_structure(value)
            structure = self._to_structure(value)
            body = self.json_codec.dumps(structure)
            if not exclusive and len(body) < threshold and not route.collides_with_marker(structure):
                return structure
            ref = self._write(
                coordinate,
                self.json_codec,
                value,
                summary=json_summary(value),
                write_body=lambda sink: sink.write(body),
            )
            return ref.to_json()
        if codec.inline_when_small:
            size = codec.estimate_size(value)
            if route.route_by_size(size, threshold=threshold, exclusive=exclusive).inline:
                try:
                    return self.converter.to_structure(value)
                except TypeError:
                    pass  # the converter cannot inline this type: store it instead
        return self.put(value, coordinate).to_json()

    def put(self, value: Any, coordinate: XComCoordinate) -> Reference:
        """Store a value regardless of size and return its reference."""
        codec = self.registry.for_value(value)
        if codec is None:
            structure = self._to_structure(value)
            body = self.json_codec.dumps(structure)
            return self._write(
                coordinate, self.json_codec, value, json_summary(value), lambda s: s.write(body)
            )
        return self._write(
            coordinate, codec, value, codec.summary(value), lambda s: codec.encode(value, s)
        )

    def _to_structure(self, value: Any) -> Any:
        try:
            return self.converter.to_structure(value)
        except TypeError as exc:
            raise UnsupportedTypeError(short_type_name(value), str(exc)) from None

    def _write(
        self,
        coordinate: XComCoordinate,
        codec: Codec,
        value: Any,
        summary: str,
        write_body: Callable[[Any], Any],
        *,
        eff: Effective | None = None,
    ) -> Reference:
        started = time.perf_counter()
        keyset = self.guard.encryption_keyset(coordinate) if self.guard is not None else None
        # Encrypted objects are never deduplicated: their bytes differ on every write (fresh
        # data key and nonces), so content addressing finds nothing to share (README, Security).
        dedup = self.config.dedup and keyset is None
        envelope = None
        if keyset is not None:
            from xcomstash.security.crypto.stream import Envelope

            assert self.guard is not None
            envelope = Envelope.new(self.guard.config.encryption_scope)
        header = container.ObjectHeader(
            codec=codec.name,
            compression=self.config.compression,
            python_type=short_type_name(value),
            codec_meta=codec.meta(value),
            # A blob may serve several XComs of the run: its header names only the run, so that
            # identical payloads give identical bytes. The links name the XComs.
            xcom=_run_scope(coordinate) if dedup else coordinate.as_dict(),
            encryption=envelope.to_header() if envelope is not None else None,
        )
        head = container.preamble(header)
        slot, cipher = b"", None
        if keyset is not None and envelope is not None:
            slot, cipher = _seal(keyset, envelope, head, coordinate)
        check_size = eff.check_size if eff is not None and eff.max_value_bytes else None
        if dedup:
            staged = streamed_blob_key(coordinate.run_prefix(), uuid.uuid4().hex)
            with self.store.new_object(staged) as pending:
                body, tail = self._write_frames(pending, head, write_body, check_size=check_size)
                digest = container.root_digest(head, tail)
                size = len(head) + body.body_size + len(tail)
                key = self._publish_blob(pending, coordinate, digest, size)
        else:
            key = coordinate.object_key()
            with self.store.writer(key) as sink:
                body, tail = self._write_frames(
                    sink, head, write_body, slot=slot, cipher=cipher, check_size=check_size
                )
            digest = container.root_digest(head, tail)
        ref = Reference(
            uri=self.store.uri_for(key),
            size=len(head) + len(slot) + body.body_size + len(tail),
            digest=digest,
            codec=codec.name,
            python_type=header.python_type,
            summary=clip_summary(summary),
            xcom=coordinate,
        )
        self._trace("push", coordinate, ref, started, raw_bytes=body.raw_size)
        return ref

    def _write_frames(
        self,
        sink: Any,
        head: bytes,
        write_body: Callable[[Any], Any],
        *,
        slot: bytes = b"",
        cipher: FrameCipher | None = None,
        check_size: Callable[..., None] | None = None,
    ) -> tuple[FrameWriter, bytes]:
        """Preamble, key slot, framed body and trailer into ``sink``; returns the writer and
        the trailer."""
        sink.write(head)
        if slot:
            sink.write(slot)
        body = FrameWriter(
            sink, self.config.compression, self.config.compression_level, self._pool(),
            cipher=cipher, check_size=check_size,
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

    def _publish_blob(self, pending: Any, coordinate: XComCoordinate, digest: str, size: int) -> str:
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
        for info in self.store.list(f"{coordinate.run_prefix()}/{LINKS}"):
            if not info.key.endswith(suffix):
                continue
            key = self._link_target(info.key)
            if key and self._holds(key, digest, size):
                return key
        return None

    def _holds(self, key: str, digest: str, size: int) -> bool:
        """Whether the object ``key`` is exactly the one with this root digest and size (its
        header, frame table and footer are read: a stale or forged link must never make a
        push reference other bytes)."""
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

    def _link_target(self, link_key: str) -> str | None:
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

    def _pool(self) -> ThreadPoolExecutor:
        """Threads for compressing, hashing and fetching frames (created on first large value)."""
        if self._threads is None:
            self._threads = ThreadPoolExecutor(
                max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="xcomstash"
            )
        return self._threads

    # ----------------------------------------------------------------- pull

    def deserialize(
        self,
        stored: Any,
        coordinate: XComCoordinate | None = None,
        *,
        readahead: bool = True,
        expected: Expected | None = None,
    ) -> Any:
        """The value for what an xcom row holds: inline structure or reference.

        ``expected`` says which XCom the reader asked for (what it knows of it); with a guard,
        a reference written for another XCom is rejected before the store is touched."""
        if is_reference(stored):
            if self.guard is None and "readers" in stored:
                raise AccessDeniedError(
                    f"the value at {str(stored.get('uri'))[:300]} has restricted readers, and this "
                    "engine has no reader identity (no guard)"
                )
            if self.guard is not None:
                if expected is None and coordinate is not None:  # the row's own XCom: all known
                    from xcomstash.security.readers import Expected

                    expected = Expected(**coordinate.as_dict())
                return self._get_guarded(stored, coordinate, readahead, expected)
            return self.get(Reference.from_json(stored), coordinate, readahead=readahead)
        started = time.perf_counter()
        value = self.converter.from_structure(stored)
        if self.trace_file:
            self._trace_inline("pull", coordinate, value, stored, started)
        if self.guard is not None and self.guard.audits_inline:
            self.guard.record("pull", "ok", coordinate or _expected_dict(expected), route="inline")
        return value

    def deserialize_many(self, stored_values: list[Any], *, expected: Expected | None = None) -> list[Any]:
        """Values for many rows at once (a mapped task's fan-in), fetched concurrently by a
        bounded pool; order is preserved and the first failure (in order) is raised."""
        if sum(1 for s in stored_values if is_reference(s)) < 2:
            return [self.deserialize(s, expected=expected) for s in stored_values]
        return list(
            self._fanin_pool().map(
                lambda s: self.deserialize(s, readahead=False, expected=expected), stored_values
            )
        )

    def _open_reference(
        self, stored: dict[str, Any], expected: Expected | None, *, check_readers: bool = True
    ) -> tuple[Reference, str]:
        """MAC, shape, expected XCom and readers: everything checked before any store access.
        Returns the reference and the id of the key that signed it ('' if unsigned)."""
        guard = self.guard
        assert guard is not None
        producer = stored.get("xcom")
        producer_dag = producer.get("dag_id") if isinstance(producer, dict) else None
        key_id = guard.open_reference(stored, producer_dag if isinstance(producer_dag, str) else None)
        ref = Reference.from_json(stored)
        readers = ref.readers if check_readers else None
        guard.check_reader(readers, ref.xcom, expected, guard.actor(), f"the value at {ref.uri}")
        return ref, key_id or ""

    def _get_guarded(
        self, stored: dict[str, Any], coordinate: XComCoordinate | None, readahead: bool, expected: Expected | None
    ) -> Any:
        from xcomstash.security.guard import outcome_of

        guard = self.guard
        assert guard is not None
        try:
            ref, key_id = self._open_reference(stored, expected)
        except XComStashError as exc:
            xcom = stored.get("xcom") if isinstance(stored.get("xcom"), dict) else _expected_dict(expected)
            guard.record("pull", outcome_of(exc), xcom, uri=str(stored.get("uri", ""))[:300], error=exc)
            raise
        where = ref.xcom or coordinate
        try:
            value = self.get(ref, coordinate, readahead=readahead, expected=expected)
        except XComStashError as exc:
            guard.record("pull", outcome_of(exc), where, uri=ref.uri, size=ref.size, digest=ref.digest, key_id=key_id, error=exc)
            raise
        guard.record("pull", "ok", where, uri=ref.uri, size=ref.size, digest=ref.digest, key_id=key_id)
        return value

    def _fanin_pool(self) -> ThreadPoolExecutor:
        if self._fanin is None:
            self._fanin = ThreadPoolExecutor(max_workers=FANIN_WORKERS, thread_name_prefix="xcomstash-fanin")
        return self._fanin

    def get(
        self,
        ref: Reference,
        coordinate: XComCoordinate | None = None,
        *,
        readahead: bool = True,
        expected: Expected | None = None,
    ) -> Any:
        """Fetch, verify and decode; raises a :class:`ReadError` subclass, never a wrong value."""
        started = time.perf_counter()
        key = self.store.key_for(ref.uri)
        coordinate = coordinate or ref.xcom or XComCoordinate.from_object_key(key)
        scope = _scope(ref, coordinate, expected)
        ahead = self._readahead if readahead else None
        prefetched = ahead.take(coordinate, key) if ahead and coordinate else None
        try:
            if prefetched is not None:
                try:
                    return self._get_from(MemoryReader(prefetched), ref, coordinate, started, scope)
                except (IntegrityError, KeyUnavailableError):
                    pass  # prefetched bytes may predate a retry's overwrite or a re-wrap
            if self.cache is not None:
                return self._get_cached(key, ref, coordinate, started, scope)
            try:
                reader = self.store.open_reader(key)
            except ReadError as exc:
                raise type(exc)(exc.detail, uri=ref.uri, coordinate=coordinate) from exc
            except StoreError as exc:
                raise StoreReadError(str(exc), uri=ref.uri, coordinate=coordinate) from exc
            return self._get_from(reader, ref, coordinate, started, scope)
        finally:
            if ahead is not None:
                ahead.note_read(coordinate)

    def _get_cached(
        self, key: str, ref: Reference, coordinate: XComCoordinate | None, started: float,
        scope: tuple[str, str] | None = None,
    ) -> Any:
        """Read through the local cache. The cache is only ever a copy: a damaged entry is
        dropped and fetched again, and a cache that cannot be used is bypassed. (An entry
        cached before a re-wrap names a key that may be gone: it is dropped the same way.)"""
        cache = self.cache
        assert cache is not None
        cached = _quietly(lambda: cache.open(ref.digest))
        if cached is not None:
            try:
                return self._get_from(cached, ref, coordinate, started, scope)
            except (IntegrityError, KeyUnavailableError):
                _quietly(lambda: cache.discard(ref.digest))
        with _read_errors(ref, coordinate):
            origin = self.store.open_reader(key)
        if origin.size != ref.size or origin.size > cache.max_bytes:
            return self._get_from(origin, ref, coordinate, started, scope)  # not worth caching
        try:
            with _read_errors(ref, coordinate):
                reader = cache.fill(ref.digest, origin, self._pool())
        except OSError as exc:  # the cache directory itself failed (full, unwritable)
            log.warning("xcomstash: read cache unusable, reading from the store: %s", exc)
            return self._get_from(origin, ref, coordinate, started, scope)
        except BaseException:
            origin.close()
            raise
        origin.close()
        try:
            return self._get_from(reader, ref, coordinate, started, scope)
        except IntegrityError:
            _quietly(lambda: cache.discard(ref.digest))
            raise

    def _get_from(
        self, reader: Any, ref: Reference, coordinate: XComCoordinate | None, started: float,
        scope: tuple[str, str] | None = None,
    ) -> Any:
        """Verify (and decrypt) and decode one object from ``reader`` (which this closes)."""

        with _read_errors(ref, coordinate):
            try:
                layout = _verified_layout(reader, ref, coordinate)
                cipher = self._opener(layout, scope) if layout.key_slot is not None else None
                payload = read_frames(
                    layout.frames, layout.body_offset, reader.read_at, reader.readinto_at, self._pool(),
                    cipher=cipher,
                )
            finally:
                reader.close()
        codec = self._codec_for(layout.header, ref, coordinate)
        with _decode_errors(codec, ref, coordinate):
            value = codec.decode(memoryview(payload), layout.header.codec_meta)
        self._trace("pull", coordinate, ref, started)
        return value

    def _opener(self, layout: container.ObjectLayout, scope: tuple[str, str] | None) -> FrameCipher:
        """The frame cipher of an encrypted object, for the scope the reader expects: its data
        key unwrapped with the keyset of that DAG."""
        from xcomstash.security.crypto.stream import Envelope, FrameCipher, object_aad, unwrap

        keyring = self.guard.config.keyring if self.guard is not None else None
        if keyring is None:
            raise KeyUnavailableError(
                "the object is encrypted and this worker has no keysets ([xcomstash] keysets)"
            )
        if scope is None:
            raise DecryptionError("the object is encrypted but the XCom it belongs to is unknown")
        assert layout.header.encryption is not None and layout.key_slot is not None
        envelope = Envelope.from_header(layout.header.encryption)
        dag_id, run_id = scope
        aad = object_aad(layout.header_bytes, envelope.scope_for(dag_id, run_id))
        return FrameCipher(unwrap(keyring.for_dag(dag_id), layout.key_slot, aad), envelope, aad)

    def _codec_for(
        self, header: container.ObjectHeader, ref: Reference, coordinate: XComCoordinate | None
    ) -> Codec:
        try:
            return self.json_codec if header.codec == JsonCodec.name else self.registry.by_name(header.codec)
        except XComStashError as exc:  # a codec not registered in this worker
            raise DecodeError(str(exc), uri=ref.uri, coordinate=coordinate) from None

    # --------------------------------------------------------- partial read

    def read_table(
        self,
        stored: Any,
        columns: Sequence[str] | None = None,
        rows: tuple[int, int | None] | None = None,
        *,
        expected: Expected | None = None,
    ) -> tuple[Any, PartialRead | None]:
        """Some columns and/or rows ``[start, stop)`` of a stored table (pandas DataFrame or
        pyarrow Table), fetching and verifying only the frames that hold them. Other values
        (inline rows, polars, non-string pandas labels, encrypted objects) are read whole and
        then sliced."""
        if is_reference(stored):
            if self.guard is not None:
                ref, _ = self._open_reference(stored, expected)
                if ref.codec not in (PandasDataFrameCodec.name, ArrowTableCodec.name) or self.guard.config.encrypt:
                    return select_in_memory(self.deserialize(stored, expected=expected), columns, rows), None
            else:
                ref = Reference.from_json(stored)
            if ref.codec in (PandasDataFrameCodec.name, ArrowTableCodec.name):
                return self._read_table_partially(ref, columns, rows)
        return select_in_memory(self.deserialize(stored, expected=expected), columns, rows), None

    def _read_table_partially(
        self, ref: Reference, columns: Sequence[str] | None, rows: tuple[int, int | None] | None
    ) -> tuple[Any, PartialRead | None]:
        key = self.store.key_for(ref.uri)
        coordinate = ref.xcom or XComCoordinate.from_object_key(key)
        cache = self.cache
        cached = _quietly(lambda: cache.open(ref.digest)) if cache else None
        if cached is not None:
            try:
                return self._read_table_from(cached, ref, coordinate, columns, rows)
            except IntegrityError:
                _quietly(lambda: cache.discard(ref.digest))  # type: ignore[union-attr]
        with _read_errors(ref, coordinate):
            reader = self.store.open_reader(key)
        return self._read_table_from(reader, ref, coordinate, columns, rows)

    def _read_table_from(
        self,
        reader: Any,
        ref: Reference,
        coordinate: XComCoordinate | None,
        columns: Sequence[str] | None,
        rows: tuple[int, int | None] | None,
    ) -> tuple[Any, PartialRead | None]:
        with _read_errors(ref, coordinate):
            try:
                layout = _verified_layout(reader, ref, coordinate)
                meta = layout.header.codec_meta
                if "columns" in meta or "column_range" in meta or layout.key_slot is not None:
                    table = None  # non-string labels, or encrypted: read whole
                else:
                    source = FramedFile(layout, reader)
                    table = read_arrow_subset(source, columns, rows, int(meta.get("batch_rows", 1 << 20)))
            finally:
                reader.close()
        if table is None:
            return select_in_memory(self.get(ref), columns, rows), None
        codec = self._codec_for(layout.header, ref, coordinate)
        with _decode_errors(codec, ref, coordinate):
            value = codec.from_table(table, meta)  # type: ignore[attr-defined]
        if rows is not None and meta.get("range_index") is not None:
            value.index = rows_of_range_index(meta["range_index"], rows[0], len(value))
        stats = PartialRead(source.bytes_fetched, source.frames_fetched, len(layout.frames), ref.size)
        return value, stats

    def _prefetch(self, coordinate: XComCoordinate) -> tuple[str, bytes] | None:
        """The object a (predicted) XCom most likely references, and its bytes: the blob of
        its newest link, else its per-XCom object. Only a guess: the reader verifies it."""
        links = [
            info for info in self.store.list(coordinate.links_prefix()) if parse_link_key(info.key)
        ]
        key = self._link_target(max(links, key=lambda i: i.modified).key) if links else None
        key = key or coordinate.object_key()
        reader = self.store.open_reader(key)
        try:
            if reader.size > MAX_PREFETCH_BYTES:
                return None
            return key, reader.read_at(0, reader.size)
        finally:
            reader.close()

    # ---------------------------------------------------------------- purge

    def purge(self, stored: Any, coordinate: XComCoordinate | None = None) -> bool:
        """Forget what a row references; True if the row held a reference.

        A per-XCom object is deleted. A shared blob loses this XCom's link, and is deleted only
        when no link is left (other XComs of the run may hold the same payload). Without a
        coordinate the link cannot be named, so the blob is left to ``xcomstash reconcile``.
        """
        if not is_reference(stored):
            return False
        try:
            if self.guard is not None:  # a forged row must not make a worker delete objects
                from xcomstash.security.readers import Expected

                expected = Expected(**coordinate.as_dict()) if coordinate is not None else None
                # Readers restrict reading; a re-run of the producer purges its own values.
                ref, _ = self._open_reference(stored, expected, check_readers=False)
            else:
                ref = Reference.from_json(stored)
            key = self.store.key_for(ref.uri)
        except (InvalidReferenceError, KeyUnavailableError, AccessDeniedError) as exc:
            log.warning("xcomstash: not purging an invalid reference (%s): %s", coordinate, exc)
            if self.guard is not None:
                from xcomstash.security.guard import outcome_of

                self.guard.record("purge", outcome_of(exc), coordinate, error=exc)
            return False
        started = time.perf_counter()
        coordinate = coordinate or ref.xcom or XComCoordinate.from_object_key(key)
        blob = parse_blob_key(key)
        if blob is None:
            self.store.delete(key)
        elif coordinate is None:
            log.warning("xcomstash: cannot name the link of %s; leaving it to reconcile", ref.uri)
        else:
            self.store.delete(coordinate.link_key(ref.digest))
            suffix = "/" + hex_of(ref.digest)
            if not any(info.key.endswith(suffix) for info in self.store.list(blob.links_root)):
                self.store.delete(key)
        self._trace("purge", coordinate, ref, started)
        if self.guard is not None:
            self.guard.record("purge", "ok", coordinate, uri=ref.uri, size=ref.size, digest=ref.digest)
        return True

    def _trace_inline(
        self, op: str, coordinate: XComCoordinate | None, value: Any, stored: Any, started: float
    ) -> None:
        seconds = time.perf_counter() - started
        codec = self.registry.for_value(value)
        emit(
            TraceEvent(
                op=op,
                route="inline",
                xcom=coordinate.as_dict() if coordinate else {},
                summary=codec.summary(value) if codec else json_summary(value),
                stored_bytes=len(self.json_codec.dumps(stored)),
                seconds=round(seconds, 6),
            ),
            self.trace_file,
        )

    def _trace(
        self,
        op: str,
        coordinate: XComCoordinate | None,
        ref: Reference,
        started: float,
        raw_bytes: int | None = None,
    ) -> None:
        emit(
            TraceEvent(
                op=op,
                route="stored",
                xcom=coordinate.as_dict() if coordinate else {},
                summary=ref.summary,
                codec=ref.codec,
                stored_bytes=ref.size,
                seconds=round(time.perf_counter() - started, 6),
                uri=ref.uri,
                extra={} if raw_bytes is None else {"raw_bytes": raw_bytes},
            ),
            self.trace_file,
        )


def _run_scope(coordinate: XComCoordinate) -> dict[str, object]:
    return {"dag_id": coordinate.dag_id, "run_id": coordinate.run_id}


def _seal(
    keyset: Keyset, envelope: Any, head: bytes, coordinate: XComCoordinate
) -> tuple[bytes, FrameCipher]:
    """A fresh data key wrapped into the key slot, and the cipher that seals the frames."""
    from xcomstash.security.crypto.stream import FrameCipher, new_data_key, object_aad, wrap

    aad = object_aad(head[container.PREAMBLE_SIZE :], envelope.scope_for(coordinate.dag_id, coordinate.run_id))
    data_key = new_data_key()
    return wrap(keyset, data_key, aad), FrameCipher(data_key, envelope, aad)


def _scope(
    ref: Reference, coordinate: XComCoordinate | None, expected: Expected | None
) -> tuple[str, str] | None:
    """The DAG and run an encrypted object must belong to: what the reader asked for where it
    knows, else what the (verified) reference says, else where the object lives."""
    known = [c for c in (ref.xcom, coordinate) if c is not None]
    dag_id = expected.dag_id if expected is not None and expected.dag_id is not None else None
    run_id = expected.run_id if expected is not None and expected.run_id is not None else None
    if dag_id is None and known:
        dag_id = known[0].dag_id
    if run_id is None and known:
        run_id = known[0].run_id
    if dag_id is None or run_id is None:
        return None
    return dag_id, run_id


def _expected_dict(expected: Expected | None) -> dict[str, Any]:
    if expected is None:
        return {}
    return {k: v for k, v in dataclasses.asdict(expected).items() if v is not None}


def _verified_layout(
    reader: Any, ref: Reference, coordinate: XComCoordinate | None
) -> container.ObjectLayout:
    """Check size, framing, root digest and codec against the reference, before any payload."""
    if reader.size != ref.size:
        raise container.ObjectFormatError(
            f"{reader.size:,} bytes where the reference says {ref.size:,} (truncated or replaced)"
        )
    layout = container.read_layout(reader.size, reader.read_at)
    if layout.digest != ref.digest:
        raise container.ObjectFormatError(
            f"digest {layout.digest} does not match the reference's {ref.digest}"
        )
    if layout.header.codec != ref.codec:
        raise container.ObjectFormatError(
            f"header codec {layout.header.codec!r} differs from the reference's {ref.codec!r}"
        )
    return layout


@contextmanager
def _read_errors(ref: Reference, coordinate: XComCoordinate | None) -> Iterator[None]:
    """Map everything that can go wrong while fetching and verifying onto our hierarchy,
    naming the XCom and the URI."""
    try:
        yield
    except ReadError as exc:
        if exc.coordinate is None and coordinate is not None:
            raise type(exc)(exc.detail, uri=ref.uri, coordinate=coordinate) from exc
        raise
    except StoreError as exc:
        raise StoreReadError(str(exc), uri=ref.uri, coordinate=coordinate) from exc
    except (container.ObjectFormatError, FrameError) as exc:
        raise IntegrityError(
            f"stored object is corrupt: {exc}", uri=ref.uri, coordinate=coordinate
        ) from None


@contextmanager
def _decode_errors(codec: Codec, ref: Reference, coordinate: XComCoordinate | None) -> Iterator[None]:
    try:
        yield
    except XComStashError:
        raise
    except Exception as exc:
        raise DecodeError(
            f"codec {codec.name!r} could not decode the object: {type(exc).__name__}: {exc}",
            uri=ref.uri,
            coordinate=coordinate,
        ) from exc


def _quietly(action: Callable[[], Any]) -> Any:
    """Run a cache operation; a cache that fails (disk full, permissions) is just bypassed."""
    try:
        return action()
    except OSError as exc:
        log.warning("xcomstash: read cache unusable: %s", exc)
        return None
