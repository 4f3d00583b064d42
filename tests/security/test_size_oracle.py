"""Stored sizes of encrypted values say nothing about what they hold.

The attack (a CRIME-style compression oracle): a task returns a value holding a secret token
next to data an attacker chose (a comment, a form field, a file name). When the value was
compressed before encryption, the compressed size shrank whenever the attacker's guess
repeated the secret, and the exact size was in the xcom row (``size``), which anyone who may
read XComs in the UI or REST API sees. Encrypted values are now stored uncompressed (unless a
DAG opts in) and padded to size buckets, so every guess gives the same size.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.format.container import read_layout
from xcomstash.format.frames import METHOD_RAW, METHOD_ZSTD, SEAL_OVERHEAD, padded_object_size, padme
from xcomstash.security.crypto.keyset import KeyRing, Keyset
from xcomstash.security.guard import Guard, SecurityConfig
from xcomstash.stores import open_store

DAG = "team_a_etl"


def make_engine(root: Path, keyset: Keyset | None, **security: Any) -> Engine:
    config = StashConfig(store_url=f"file://{root}", threshold=0, read_ahead=False, compression="zstd")
    if keyset is not None:
        security = {"keyring": KeyRing.single(keyset), "encrypt": True, "sign_references": True, **security}
    return Engine(config, open_store(config.store_url), guard=Guard(SecurityConfig(**security)))


def layout_of(engine: Engine, row: dict[str, Any]):
    data = (Path(engine.store.root) / engine.store.key_for(row["uri"])).read_bytes()
    return len(data), read_layout(len(data), lambda o, n: data[o : o + n])


def guess_sizes(engine: Engine, secret: str, guesses: list[str], run: str) -> tuple[list[int], list[int]]:
    """Push ``{token, attacker's text}`` once per guess; the row sizes an XCom reader sees and
    the stored objects' lengths."""
    rows, lengths = [], []
    for i, guess in enumerate(guesses):
        coordinate = XComCoordinate(DAG, run, "call_api", i, "return_value")
        value = {"api_token": secret, "status": "ok", "comment": f"api_token {guess} " + "retry later " * 20}
        row = engine.serialize(value, coordinate)
        assert engine.deserialize(row, coordinate) == value
        rows.append(row["size"])
        lengths.append(layout_of(engine, row)[0])
    return rows, lengths


def test_row_size_does_not_confirm_a_guessed_secret(tmp_path) -> None:
    engine = make_engine(tmp_path / "s", Keyset.generate())
    rng = random.Random(12)
    recovered = 0
    for n in range(3):
        secret = os.urandom(8).hex()  # a 64-bit token
        guesses = [secret] + [rng.randbytes(8).hex() for _ in range(15)]
        rng.shuffle(guesses)
        sizes, lengths = guess_sizes(engine, secret, guesses, f"run_{n}")
        assert sizes == lengths  # the row's size is the stored object's length
        # Before: the right guess compressed better, so the smallest size named the secret.
        recovered += guesses[sizes.index(min(sizes))] == secret and sizes.count(min(sizes)) == 1
        assert len(set(sizes)) == 1, f"sizes differ by guess: {sorted(set(sizes))}"
    assert recovered == 0


def test_encrypted_values_are_stored_uncompressed_and_in_size_buckets(tmp_path) -> None:
    engine = make_engine(tmp_path / "s", Keyset.generate())
    for i, value in enumerate((b"a" * 10, b"abc" * 1_000_000, os.urandom(2_500_000), {"k": "v" * 70_000})):
        coordinate = XComCoordinate(DAG, "run_1", "t", i, "return_value")
        row = engine.serialize(value, coordinate)
        length, layout = layout_of(engine, row)
        assert layout.header.compression == "none"
        assert all(f.method == METHOD_RAW for f in layout.frames)
        assert row["size"] == length == padded_object_size(length), "the object is a bucket size"
        assert engine.deserialize(row, coordinate) == value
    # 200 different lengths share two sizes (buckets are 256 bytes wide here).
    sizes = {engine.serialize(b"x" * n, XComCoordinate(DAG, "run_2", "t", n, "k"))["size"] for n in range(5000, 5200)}
    assert len(sizes) <= 2


def test_a_dag_may_opt_in_to_compression_and_its_frames_are_padded(tmp_path) -> None:
    engine = make_engine(tmp_path / "s", Keyset.generate(), compress_encrypted=("team_a_*",))
    coordinate = XComCoordinate(DAG, "run_1", "t", -1, "return_value")
    value = b"".join(b"row %08d of a compressible table\n" % i for i in range(120_000))  # ~4 MB, 4 frames
    row = engine.serialize(value, coordinate)
    length, layout = layout_of(engine, row)
    assert layout.header.compression == "zstd" and layout.frames[0].method == METHOD_ZSTD
    for frame in layout.frames[:-1]:  # each compressed frame's stored length is a Padmé bucket
        assert padme(frame.stored_len - SEAL_OVERHEAD) == frame.stored_len - SEAL_OVERHEAD
    assert row["size"] == length == padded_object_size(length)
    assert engine.deserialize(row, coordinate) == value
    other = make_engine(tmp_path / "s", Keyset.generate(), compress_encrypted=("team_b_*",))
    assert layout_of(other, other.serialize(value, coordinate))[1].header.compression == "none"


@pytest.mark.parametrize("pattern", ["team_a_*", "*"])
def test_opted_in_small_values_still_share_one_size(tmp_path, pattern) -> None:
    """The guess oracle with compression opted in: small values all land in the 4 KiB bucket."""
    engine = make_engine(tmp_path / "s", Keyset.generate(), compress_encrypted=(pattern,))
    secret = os.urandom(8).hex()
    guesses = [secret] + [os.urandom(8).hex() for _ in range(7)]
    sizes, _ = guess_sizes(engine, secret, guesses, "run_1")
    assert set(sizes) == {4096}


def test_plaintext_values_are_compressed_and_unpadded_as_before(tmp_path) -> None:
    engine = make_engine(tmp_path / "s", None)
    coordinate = XComCoordinate(DAG, "run_1", "t", -1, "return_value")
    row = engine.serialize(b"abc" * 1_000_000, coordinate)
    length, layout = layout_of(engine, row)
    assert layout.header.compression == "zstd" and all(f.method == METHOD_ZSTD for f in layout.frames)
    assert layout.frames[0].stored_len < 10_000  # compressed, not padded
    assert row["size"] == length
