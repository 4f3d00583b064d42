"""LocalStore: the Store contract, plus what only a filesystem store has to get right."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xcomstash.testing import Boom, StoreContract, write
from xcomstash.errors import InvalidReferenceError, ObjectMissingError
from xcomstash.stores import LocalStore, open_store


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> LocalStore:
    return LocalStore(root)


@pytest.fixture
def raw_names(root: Path):
    def names() -> list[str]:
        if not root.exists():
            return []
        return sorted(
            os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
        )

    return names


class TestLocalStoreContract(StoreContract):
    pass


def test_open_store_file_url(root: Path) -> None:
    store = open_store(f"file://{root}")
    assert isinstance(store, LocalStore)
    assert store.root_uri == f"file://{root.resolve()}"


def test_root_is_resolved(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    store = LocalStore(tmp_path / "link" / ".." / "real")
    assert store.root_uri == f"file://{(tmp_path / 'real').resolve()}"
    write(store, "k.xcs", b"x")
    assert (tmp_path / "real" / "k.xcs").read_bytes() == b"x"


def test_temp_file_is_hidden_from_list_while_writing(store: LocalStore, raw_names) -> None:
    with store.writer("a/b.xcs") as f:
        f.write(b"x" * 10)
        f.flush()
        (temp,) = raw_names()
        assert os.path.basename(temp).startswith(".tmp-")
        assert list(store.list()) == []
    assert raw_names() == ["a/b.xcs"]


def test_failed_write_removes_temp_file(store: LocalStore, raw_names) -> None:
    with pytest.raises(Boom):
        with store.writer("a/b.xcs") as f:
            f.write(b"x" * (3 << 20))  # past the write buffer, so bytes really hit the disk
            raise Boom()
    assert raw_names() == []


def test_directory_is_not_an_object(store: LocalStore) -> None:
    write(store, "dir/obj.xcs", b"x")
    with pytest.raises(ObjectMissingError):
        store.get("dir")


def test_key_for_rejects_file_url_with_host(store: LocalStore) -> None:
    with pytest.raises(InvalidReferenceError):
        store.key_for(store.root_uri.replace("file://", "file://evil.example") + "/k.xcs")


def test_an_object_is_published_into_a_directory_that_does_not_exist_yet(store: LocalStore, root: Path) -> None:
    # Directories are created only when missing: a key staged in one directory and published
    # into another (a deduplicated blob) still lands, and so does a first write into a new one.
    with store.new_object("run/a/staged") as pending:
        pending.write(b"payload")
        pending.publish("run/blobs/deep/er/blob")
    assert store.get("run/blobs/deep/er/blob") == b"payload"
    with store.writer("fresh/dir/key") as sink:
        sink.write(b"x")
    assert store.get("fresh/dir/key") == b"x"
    with store.new_object("run/a/other") as pending:
        pending.write(b"y")
        pending.publish("elsewhere/new", if_absent=True)
    assert store.get("elsewhere/new") == b"y"
    assert not [n for _, _, files in os.walk(root) for n in files if n.startswith(".tmp-")]
