"""The Store contract, written once and run against every store and every wrapper.

Public so that a user's own :class:`~xcomstash.stores.Store` can be checked the same way as the
stores shipped here. A test module subclasses :class:`StoreContract` as ``Test...`` and provides
two pytest fixtures:

- ``store``: an empty store of that kind;
- ``raw_names``: a callable returning every physical name under the store's root (temporary
  and partial files included), so "nothing visible" can be checked below the Store interface.

::

    from xcomstash.testing import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self): ...
        @pytest.fixture
        def raw_names(self): ...
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import pytest

from xcomstash.coordinate import XComCoordinate
from xcomstash.errors import InvalidReferenceError, ObjectExistsError, ObjectMissingError, StoreError
from xcomstash.stores import Capabilities, ReadSource, Store

__all__ = ["AWKWARD_COORDINATES", "Boom", "StoreContract", "read_via_sources", "write"]

RawNames = Callable[[], "list[str]"]

#: What the killed-writer test writes: more than an S3 part (16 MiB), so that stores which
#: upload in parts while writing have started one.
KILLED_WRITE_BYTES = 17 * 1024 * 1024

#: Keys the engine really produces, including percent-encoded components.
AWKWARD_COORDINATES = [
    XComCoordinate("plain_dag", "manual__2024-01-01T00:00:00+00:00", "extract", -1, "return_value"),
    XComCoordinate("dag with spaces", "run/with/slashes", "task.group.t", 3, "key?#&%"),
    XComCoordinate("ünïcødé", "..", ".", 0, "日本語"),
    XComCoordinate("x" * 300, "r", "t", 7, "long dag id gets hashed"),
]


class Boom(Exception):
    """Raised inside a writer block to check that a failed write publishes nothing."""


def write(store: Store, key: str, data: bytes) -> None:
    """Store ``data`` under ``key`` through the streamed writer (the only write path)."""
    with store.writer(key) as f:
        f.write(data)


def read_via_sources(store: Store, key: str, *, size_hint: int | None = None) -> tuple[str, bytes]:
    """Read ``key`` the way the pull path does, minus verification: the first source that opens
    serves the whole object. Returns the serving source's name and the bytes. The last source's
    error is raised when none serves (:class:`ObjectMissingError` for a missing object)."""
    error: Exception | None = None
    for source in store.read_sources(key, size_hint=size_hint):
        try:
            reader = source.open()
        except StoreError as exc:
            error = exc
            continue
        if reader is None:
            continue
        try:
            return source.name, reader.read_at(0, reader.size)
        finally:
            reader.close()
    if error is not None:
        raise error
    raise ObjectMissingError("no read source holds the object", uri=store.uri_for(key))


class StoreContract:
    # ----------------------------------------------------------- writer / get

    def test_write_then_get(self, store: Store) -> None:
        write(store, "a/b/c.xcs", b"hello")
        assert store.get("a/b/c.xcs") == b"hello"

    def test_empty_object(self, store: Store) -> None:
        write(store, "empty.xcs", b"")
        assert store.get("empty.xcs") == b""
        info = store.head("empty.xcs")
        assert info is not None and info.size == 0

    def test_writer_accepts_many_small_writes(self, store: Store) -> None:
        chunks = [bytes([i % 256]) * (i + 1) for i in range(200)]
        with store.writer("chunks.xcs") as f:
            for chunk in chunks:
                f.write(chunk)
        assert store.get("chunks.xcs") == b"".join(chunks)

    def test_writer_is_done_with_the_callers_buffer_when_write_returns(self, store: Store) -> None:
        """The frame writer hands a store the caller's own memory (no copy) and the caller may
        reuse it as soon as ``write`` returns: a writer must copy or send what it keeps."""
        buffer = bytearray(b"first " * 200_000)
        with store.writer("reused.xcs") as f:
            for fill in (b"a", b"b", b"c"):
                f.write(memoryview(buffer))
                buffer[:] = fill * len(buffer)
        assert store.get("reused.xcs") == b"first " * 200_000 + b"a" * len(buffer) + b"b" * len(buffer)

    def test_overwrite_replaces(self, store: Store) -> None:
        write(store, "k.xcs", b"first version, longer")
        write(store, "k.xcs", b"second")
        assert store.get("k.xcs") == b"second"
        info = store.head("k.xcs")
        assert info is not None and info.size == len(b"second")

    def test_object_not_visible_while_writing(self, store: Store) -> None:
        with store.writer("pending/obj.xcs") as f:
            f.write(b"x" * 1000)
            assert store.head("pending/obj.xcs") is None
            assert [i.key for i in store.list()] == []
            with pytest.raises(ObjectMissingError):
                store.get("pending/obj.xcs")
        assert store.get("pending/obj.xcs") == b"x" * 1000

    def test_failed_writer_publishes_nothing(self, store: Store, raw_names: RawNames) -> None:
        with pytest.raises(Boom):
            with store.writer("d/r/t/0/v.xcs") as f:
                f.write(b"partial " * 1000)
                raise Boom()
        assert store.head("d/r/t/0/v.xcs") is None
        with pytest.raises(ObjectMissingError):
            store.get("d/r/t/0/v.xcs")
        assert list(store.list()) == []
        assert raw_names() == [], "a failed write left something behind"

    def test_failed_writer_leaves_existing_object_untouched(self, store: Store, raw_names: RawNames) -> None:
        write(store, "k.xcs", b"the good version")
        before = store.head("k.xcs")
        with pytest.raises(Boom):
            with store.writer("k.xcs") as f:
                f.write(b"the bad version that must never be seen")
                raise Boom()
        assert store.get("k.xcs") == b"the good version"
        assert store.head("k.xcs") == before
        assert [i.key for i in store.list()] == ["k.xcs"]
        assert len(raw_names()) == 1

    def test_writer_exception_type_is_preserved(self, store: Store) -> None:
        with pytest.raises(KeyError):
            with store.writer("k.xcs") as f:
                f.write(b"x")
                raise KeyError("inner")

    # ------------------------------------------------- conditional create

    def test_publish_if_absent_creates_a_new_object(self, store: Store) -> None:
        with store.new_object("cas/new.xcs") as pending:
            pending.write(b"first")
            pending.publish("cas/new.xcs", if_absent=True)
        assert store.get("cas/new.xcs") == b"first"

    def test_publish_if_absent_refuses_an_existing_object_and_keeps_it(
        self, store: Store, raw_names: RawNames
    ) -> None:
        write(store, "cas/k.xcs", b"the stored bytes")
        with pytest.raises(ObjectExistsError):
            with store.new_object("cas/k.xcs") as pending:
                pending.write(b"other bytes that must not replace them")
                pending.publish("cas/k.xcs", if_absent=True)
        assert store.get("cas/k.xcs") == b"the stored bytes"
        assert [i.key for i in store.list()] == ["cas/k.xcs"]
        assert len(raw_names()) == 1, "a refused publish left something behind"

    # ---------------------------------------------------- unfinished uploads

    def test_killed_writer_leaves_nothing_that_reconcile_cannot_find(
        self, store: Store, raw_names: RawNames
    ) -> None:
        """A writer killed mid-upload (its block never exits) leaves either nothing or
        unfinished uploads that the store lists and removes; never a visible object."""
        block = store.new_object("killed/v.xcs")
        pending = block.__enter__()
        pending.write(b"k" * (KILLED_WRITE_BYTES))
        for _ in range(2):  # a store may finish a background write a moment later
            if list(store.unfinished_uploads()) or not raw_names():
                break
            time.sleep(0.5)
        assert store.head("killed/v.xcs") is None
        assert list(store.list()) == []
        for upload in list(store.unfinished_uploads()):
            assert upload.started <= time.time() + 5
            store.remove_unfinished(upload)
            store.remove_unfinished(upload)  # already gone: not an error
        assert list(store.unfinished_uploads()) == []
        assert raw_names() == [], "a killed writer left bytes the store does not list as unfinished"

    # -------------------------------------------------------------- missing

    def test_get_missing_raises_object_missing(self, store: Store) -> None:
        with pytest.raises(ObjectMissingError) as info:
            store.get("no/such/object.xcs")
        assert isinstance(info.value, StoreError)
        assert info.value.uri == store.uri_for("no/such/object.xcs")
        assert store.uri_for("no/such/object.xcs") in str(info.value)

    def test_get_after_delete_raises_object_missing(self, store: Store) -> None:
        write(store, "gone.xcs", b"x")
        store.delete("gone.xcs")
        with pytest.raises(ObjectMissingError):
            store.get("gone.xcs")

    # --------------------------------------------------------------- reader

    def test_reader_reads_ranges(self, store: Store) -> None:
        data = bytes(range(256)) * 40
        write(store, "r.xcs", data)
        reader = store.open_reader("r.xcs")
        try:
            assert reader.size == len(data)
            assert reader.read_at(0, len(data)) == data
            assert reader.read_at(100, 50) == data[100:150]
            assert reader.read_at(len(data) - 5, 50) == data[-5:]  # short only at the end
            assert reader.read_at(len(data), 10) == b""
            target = bytearray(300)
            assert reader.readinto_at(1000, memoryview(target)) == 300
            assert bytes(target) == data[1000:1300]
        finally:
            reader.close()

    def test_reader_on_empty_object(self, store: Store) -> None:
        write(store, "empty.xcs", b"")
        reader = store.open_reader("empty.xcs")
        try:
            assert reader.size == 0
            assert reader.read_at(0, 10) == b""
        finally:
            reader.close()

    def test_reader_on_missing_object_raises_object_missing(self, store: Store) -> None:
        with pytest.raises(ObjectMissingError) as info:
            store.open_reader("no/such.xcs")
        assert info.value.uri == store.uri_for("no/such.xcs")

    # --------------------------------------------------------------- delete

    def test_delete_is_idempotent(self, store: Store) -> None:
        store.delete("never/existed.xcs")
        write(store, "k.xcs", b"x")
        store.delete("k.xcs")
        store.delete("k.xcs")
        assert store.head("k.xcs") is None

    def test_delete_leaves_other_objects(self, store: Store) -> None:
        write(store, "a/1.xcs", b"1")
        write(store, "a/2.xcs", b"2")
        store.delete("a/1.xcs")
        assert [i.key for i in store.list()] == ["a/2.xcs"]

    # ----------------------------------------------------------------- head

    def test_head_returns_size_and_mtime(self, store: Store) -> None:
        before = time.time()
        write(store, "h/obj.xcs", b"12345" * 100)
        info = store.head("h/obj.xcs")
        assert info is not None
        assert info.key == "h/obj.xcs"
        assert info.size == 500
        # S3 timestamps have one-second resolution; allow for that and a little clock skew.
        assert before - 2 <= info.modified <= time.time() + 2

    def test_head_missing_is_none(self, store: Store) -> None:
        assert store.head("no/such.xcs") is None
        assert store.head("no") is None

    # ----------------------------------------------------------------- list

    def test_list_empty_store(self, store: Store) -> None:
        assert list(store.list()) == []
        assert list(store.list("nothing-here")) == []

    def test_list_is_a_stream(self, store: Store) -> None:
        write(store, "a.xcs", b"x")
        listing = store.list()
        assert iter(listing) is listing  # an iterator, not a materialised list

    def test_list_returns_every_key_with_size(self, store: Store) -> None:
        expected = {}
        for i, coordinate in enumerate(AWKWARD_COORDINATES):
            key = coordinate.object_key()
            data = b"v" * (10 + i)
            write(store, key, data)
            expected[key] = len(data)
        listed = {info.key: info.size for info in store.list()}
        assert listed == expected
        for info in store.list():
            assert store.get(info.key) == b"v" * info.size
            assert XComCoordinate.from_object_key(info.key) in AWKWARD_COORDINATES + [None]

    def test_percent_encoded_keys_round_trip_through_list(self, store: Store) -> None:
        coordinate = AWKWARD_COORDINATES[1]
        key = coordinate.object_key()
        assert "%2F" in key and "%20" in key  # really percent-encoded
        write(store, key, b"payload")
        (info,) = list(store.list())
        assert info.key == key
        assert XComCoordinate.from_object_key(info.key) == coordinate

    def test_list_under_prefix(self, store: Store) -> None:
        for key in ["dag_a/r1/t/0/v.xcs", "dag_a/r2/t/0/v.xcs", "dag_ab/r1/t/0/v.xcs", "dag_b/r/t/0/v.xcs"]:
            write(store, key, key.encode())
        under_a = sorted(i.key for i in store.list("dag_a"))
        assert under_a == ["dag_a/r1/t/0/v.xcs", "dag_a/r2/t/0/v.xcs"]
        assert sorted(i.key for i in store.list("dag_a/")) == under_a
        assert [i.key for i in store.list("dag_a/r2")] == ["dag_a/r2/t/0/v.xcs"]
        assert [i.key for i in store.list("dag_b")] == ["dag_b/r/t/0/v.xcs"]
        assert list(store.list("dag_c")) == []
        assert len(list(store.list())) == 4

    def test_list_under_percent_encoded_prefix(self, store: Store) -> None:
        coordinate = AWKWARD_COORDINATES[1]
        write(store, coordinate.object_key(), b"1")
        write(store, AWKWARD_COORDINATES[0].object_key(), b"2")
        dag_prefix = coordinate.object_key().split("/")[0]
        assert "%20" in dag_prefix
        assert [i.key for i in store.list(dag_prefix)] == [coordinate.object_key()]

    # ------------------------------------------------------- uri_for / key_for

    @pytest.mark.parametrize(
        "key",
        ["a.xcs", "a/b/c/0/d.xcs"] + [c.object_key() for c in AWKWARD_COORDINATES],
    )
    def test_uri_key_round_trip(self, store: Store, key: str) -> None:
        uri = store.uri_for(key)
        assert uri.startswith(store.root_uri + "/")
        assert store.key_for(uri) == key

    def test_uri_of_written_object_reads_back(self, store: Store) -> None:
        key = AWKWARD_COORDINATES[2].object_key()
        write(store, key, b"data")
        assert store.get(store.key_for(store.uri_for(key))) == b"data"

    @pytest.mark.parametrize(
        "suffix",
        [
            "",  # the root itself
            "/",  # empty key
            "/../x.xcs",
            "/a/../../x.xcs",
            "/a/..",
            "/./x.xcs",
            "/a//b.xcs",
            "/a/b/",
            "/a\\..\\b.xcs",
            "/a\x00b.xcs",
        ],
    )
    def test_key_for_rejects_unsafe_keys(self, store: Store, suffix: str) -> None:
        with pytest.raises(InvalidReferenceError):
            store.key_for(store.root_uri + suffix)

    def test_key_for_rejects_sibling_root(self, store: Store) -> None:
        # Same string prefix, different directory: "/root2/x" is not inside "/root".
        with pytest.raises(InvalidReferenceError):
            store.key_for(store.root_uri + "2/x.xcs")
        with pytest.raises(InvalidReferenceError):
            store.key_for(store.root_uri + "-other/x.xcs")

    @pytest.mark.parametrize(
        "uri",
        [
            "file:///etc/passwd",
            "file:///tmp/x.xcs",
            "s3://xcom/x.xcs",
            "s3://other-bucket/x.xcs",
            "gs://xcom/x.xcs",
            "https://example.com/x.xcs",
            "x.xcs",
            "",
        ],
    )
    def test_key_for_rejects_uris_outside_root(self, store: Store, uri: str) -> None:
        with pytest.raises(InvalidReferenceError):
            store.key_for(uri)

    def test_key_for_rejects_other_scheme_same_path(self, store: Store) -> None:
        scheme, rest = store.root_uri.split("://", 1)
        for other in ("file", "s3", "gs", "az", "S3", "FILE"):
            if other == scheme:
                continue
            with pytest.raises(InvalidReferenceError):
                store.key_for(f"{other}://{rest}/x.xcs")

    # ---------------------------------------------------------- read sources

    def test_read_sources_first_source_that_opens_serves_the_object(self, store: Store) -> None:
        data = bytes(range(256)) * 100
        write(store, "s/obj.xcs", data)
        assert read_via_sources(store, "s/obj.xcs")[1] == data
        # again (a cache now holds it), and with the size a reference would give as the hint
        assert read_via_sources(store, "s/obj.xcs")[1] == data
        assert read_via_sources(store, "s/obj.xcs", size_hint=len(data))[1] == data

    def test_read_sources_serve_an_empty_object(self, store: Store) -> None:
        write(store, "s/empty.xcs", b"")
        assert read_via_sources(store, "s/empty.xcs")[1] == b""
        assert read_via_sources(store, "s/empty.xcs", size_hint=0)[1] == b""

    def test_read_sources_reader_reads_ranges(self, store: Store) -> None:
        data = bytes(range(256)) * 40
        write(store, "s/r.xcs", data)
        for _ in range(2):  # first read and (for a cache) the hit
            for source in store.read_sources("s/r.xcs"):
                reader = source.open()
                if reader is not None:
                    break
            else:
                pytest.fail("no source opened")
            try:
                assert reader.size == len(data)
                assert reader.read_at(100, 50) == data[100:150]
                assert reader.read_at(len(data) - 5, 50) == data[-5:]
                target = bytearray(300)
                assert reader.readinto_at(1000, memoryview(target)) == 300
                assert bytes(target) == data[1000:1300]
            finally:
                reader.close()

    def test_read_sources_are_named_lazy_and_distinct(self, store: Store) -> None:
        sources = store.read_sources("no/such/object.xcs")  # building the list touches nothing
        assert sources, "a store has at least one source: itself"
        assert all(isinstance(s, ReadSource) and s.name for s in sources)
        names = [s.name for s in sources]
        assert len(set(names)) == len(names), f"source names must tell sources apart: {names}"

    def test_read_sources_of_missing_object_serve_nothing(self, store: Store) -> None:
        key = "no/such/object.xcs"
        missing: list[ObjectMissingError] = []
        for source in store.read_sources(key):
            try:
                reader = source.open()
            except ObjectMissingError as exc:
                missing.append(exc)
                continue
            assert reader is None, f"source {source.name!r} served an object that does not exist"
        assert missing, "no source said the object is missing"
        assert all(exc.uri == store.uri_for(key) for exc in missing)

    def test_read_sources_discard_then_read_again(self, store: Store) -> None:
        data = b"discard me " * 100
        write(store, "s/d.xcs", data)
        read_via_sources(store, "s/d.xcs")
        for source in store.read_sources("s/d.xcs"):
            reader = source.open()
            if reader is not None:
                reader.close()
            source.discard()  # what the pull path does when verification fails
            source.discard()  # twice: idempotent
        assert read_via_sources(store, "s/d.xcs")[1] == data

    def test_read_sources_after_delete_serve_nothing(self, store: Store) -> None:
        write(store, "s/gone.xcs", b"soon gone")
        assert read_via_sources(store, "s/gone.xcs")[1] == b"soon gone"
        store.delete("s/gone.xcs")
        with pytest.raises(ObjectMissingError):
            read_via_sources(store, "s/gone.xcs")

    def test_read_sources_from_many_threads(self, store: Store) -> None:
        data = bytes(range(256)) * 4096  # 1 MiB
        write(store, "s/shared.xcs", data)
        results: list[bytes] = []
        errors: list[BaseException] = []

        def read() -> None:
            try:
                results.append(read_via_sources(store, "s/shared.xcs")[1])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=read) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert results == [data] * 8

    # ------------------------------------------------------- capabilities / close

    def test_capabilities_describe_the_store(self, store: Store) -> None:
        capabilities = store.capabilities
        assert isinstance(capabilities, Capabilities)
        assert store.is_local is capabilities.local
        if capabilities.listing:
            write(store, "cap.xcs", b"x")
            assert [i.key for i in store.list()] == ["cap.xcs"]

    def test_close_is_idempotent(self, store: Store) -> None:
        write(store, "c.xcs", b"x")
        assert read_via_sources(store, "c.xcs")[1] == b"x"
        store.close()
        store.close()
