"""WrapperStore: a bare wrapper is a complete Store (the contract passes) and hands every
method to the store inside, so a subclass changes only what it overrides."""

from __future__ import annotations

import builtins
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from xcomstash.stores import (
    Capabilities,
    LocalStore,
    ObjectInfo,
    ObjectReader,
    PendingObject,
    ReadSource,
    Store,
    WrapperStore,
)
from xcomstash.testing import StoreContract, read_via_sources, write


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


def local_raw_names(root: Path) -> Callable[[], list[str]]:
    def names() -> list[str]:
        if not root.exists():
            return []
        return sorted(
            os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
        )

    return names


class TestWrapperStoreContract(StoreContract):
    @pytest.fixture
    def store(self, root: Path) -> WrapperStore:
        return WrapperStore(LocalStore(root))

    @pytest.fixture
    def raw_names(self, root: Path) -> Callable[[], list[str]]:
        return local_raw_names(root)


class Recorder(Store):
    """A fake store that records which method was called with what, returning markers."""

    root_uri = "rec://root"
    capabilities = Capabilities(local=True, ranged_reads=False, listing=False, cheap_publish=False)

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def _note(self, name: str, *args: Any) -> str:
        self.calls.append((name, args))
        return f"{name}-result"

    def writer(self, key: str) -> AbstractContextManager[PendingObject]:  # type: ignore[override]
        return self._note("writer", key)  # type: ignore[return-value]

    def new_object(self, staged_key: str) -> AbstractContextManager[PendingObject]:
        return self._note("new_object", staged_key)  # type: ignore[return-value]

    def get(self, key: str) -> bytes:
        return self._note("get", key)  # type: ignore[return-value]

    def open_reader(self, key: str) -> ObjectReader:
        return self._note("open_reader", key)  # type: ignore[return-value]

    def delete(self, key: str) -> None:
        self._note("delete", key)

    def head(self, key: str) -> ObjectInfo | None:
        return self._note("head", key)  # type: ignore[return-value]

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self._note("list", prefix)  # type: ignore[return-value]

    def uri_for(self, key: str) -> str:
        return self._note("uri_for", key)

    def key_for(self, uri: str) -> str:
        return self._note("key_for", uri)

    def read_sources(self, key: str, *, size_hint: int | None = None, whole: bool = True, prefer=()) -> builtins.list[ReadSource]:
        return self._note("read_sources", key, size_hint)  # type: ignore[return-value]

    def close(self) -> None:
        self._note("close")


@pytest.mark.parametrize(
    "method, args, expected_args",
    [
        ("writer", ("k",), ("k",)),
        ("new_object", ("k",), ("k",)),
        ("get", ("k",), ("k",)),
        ("open_reader", ("k",), ("k",)),
        ("head", ("k",), ("k",)),
        ("list", ("p",), ("p",)),
        ("uri_for", ("k",), ("k",)),
        ("key_for", ("rec://root/k",), ("rec://root/k",)),
    ],
)
def test_every_method_is_delegated_to_inner(method: str, args: tuple[str, ...], expected_args: tuple[str, ...]) -> None:
    inner = Recorder()
    result = getattr(WrapperStore(inner), method)(*args)
    assert inner.calls == [(method, expected_args)]
    assert result == f"{method}-result"


def test_delete_read_sources_and_close_are_delegated_to_inner() -> None:
    inner = Recorder()
    wrapper = WrapperStore(inner)
    wrapper.delete("k")
    assert wrapper.read_sources("k", size_hint=12) == "read_sources-result"
    wrapper.close()
    assert inner.calls == [("delete", ("k",)), ("read_sources", ("k", 12)), ("close", ())]


def test_root_uri_and_capabilities_are_the_inner_stores() -> None:
    inner = Recorder()
    wrapper = WrapperStore(inner)
    assert wrapper.root_uri == "rec://root"
    assert wrapper.capabilities is inner.capabilities
    assert wrapper.is_local is True  # the compatibility property follows capabilities.local


def test_wrapper_refuses_exactly_the_uris_its_inner_store_refuses(root: Path) -> None:
    from xcomstash.errors import InvalidReferenceError

    wrapper = WrapperStore(LocalStore(root))
    assert wrapper.key_for(wrapper.uri_for("a/b.xcs")) == "a/b.xcs"
    with pytest.raises(InvalidReferenceError):
        wrapper.key_for(wrapper.root_uri + "/../escape.xcs")


def test_subclass_overrides_only_what_it_changes(root: Path) -> None:
    class Upper(WrapperStore):
        def get(self, key: str) -> bytes:
            return self.inner.get(key).upper()

    store = Upper(LocalStore(root))
    write(store, "k.xcs", b"hello")  # writer: delegated
    assert store.get("k.xcs") == b"HELLO"  # overridden
    assert read_via_sources(store, "k.xcs") == ("store", b"hello")  # delegated: the inner's sources
    assert [i.key for i in store.list()] == ["k.xcs"]


def test_wrappers_nest(root: Path) -> None:
    store = WrapperStore(WrapperStore(LocalStore(root)))
    write(store, "k.xcs", b"x")
    assert store.get("k.xcs") == b"x"
    assert store.capabilities.local
    assert repr(store).startswith("WrapperStore(WrapperStore(")


def test_plain_store_defaults() -> None:
    """What a store that overrides nothing new gets: itself as its only source, a no-op close,
    default capabilities (remote, ranged reads, listing, cheap publish)."""
    assert Capabilities() == Capabilities(
        local=False, ranged_reads=True, listing=True, cheap_publish=True, multipart=False
    )
    assert LocalStore.capabilities.local is True
    from xcomstash.stores.s3 import S3Store

    assert S3Store.capabilities.local is False
    assert S3Store.capabilities.cheap_publish is False  # a multipart upload cannot be renamed
    source = ReadSource("x", lambda: None)
    source.discard()  # the default discard does nothing, and does not fail
