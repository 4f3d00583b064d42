"""The details of the stored format and the MAC that an attacker could bend, each against the
engine: one spelling per MAC, frame table entries bound to their frames, a wrap key per object,
no content-derived names for encrypted values; and objects of the first format stay readable."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.errors import DecryptionError, ReferenceSignatureError
from xcomstash.format import container
from xcomstash.format.container import read_layout
from xcomstash.format.frames import METHOD_RAW, METHOD_ZSTD, Frame
from xcomstash.security import signing
from xcomstash.security.crypto import stream
from xcomstash.security.crypto.keyset import PURPOSE_WRAP, KeyRing, Keyset
from xcomstash.security.guard import Guard, SecurityConfig
from xcomstash.stores import open_store

COORD = XComCoordinate("team_a_etl", "run_1", "extract", -1, "return_value")
FIXTURE = Path(__file__).parent / "fixtures" / "objects_v1"
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def make_engine(root: Path, keyset: Keyset, **security: Any) -> Engine:
    config = StashConfig(store_url=f"file://{root}", threshold=0, read_ahead=False, compression="zstd")
    security = {"keyring": KeyRing.single(keyset), "encrypt": True, "sign_references": True, **security}
    return Engine(config, open_store(config.store_url), guard=Guard(SecurityConfig(**security)))


def object_path(engine: Engine, row: dict[str, Any]) -> Path:
    return Path(engine.store.root) / engine.store.key_for(row["uri"])


def layout_of(path: Path) -> container.ObjectLayout:
    data = path.read_bytes()
    return read_layout(len(data), lambda o, n: data[o : o + n])


# ----------------------------------------------------------------------------- MAC spelling


def test_a_mac_spelled_differently_is_rejected(tmp_path) -> None:
    """The last of 43 base64url characters carries 4 bits of the tag and 2 unused bits: four
    spellings decode to the same tag. Only the one a worker writes is accepted."""
    engine = make_engine(tmp_path / "s", Keyset.generate())
    row = engine.serialize({"a": 1}, COORD)
    key_id, _, tag = row["mac"].partition(":")
    alias = tag[:-1] + B64URL[B64URL.index(tag[-1]) ^ 1]
    assert base64.urlsafe_b64decode(alias + "=") == base64.urlsafe_b64decode(tag + "=")  # same bytes
    with pytest.raises(ReferenceSignatureError, match="does not match"):
        engine.deserialize({**row, "mac": f"{key_id}:{alias}"}, COORD)
    assert engine.deserialize(row, COORD) == {"a": 1}


# --------------------------------------------------------------- frame table entries


def rewrite_table(path: Path, row: dict[str, Any], edit) -> dict[str, Any]:
    """Edit the frame table of a stored object, fix footer and root digest, and return the
    (unsigned) reference a writer of the xcom table would put next to it."""
    data = path.read_bytes()
    layout = read_layout(len(data), lambda o, n: data[o : o + n])
    frames = [edit(i, f) for i, f in enumerate(layout.frames)]
    head = data[: layout.key_slot_offset]
    body = data[layout.body_offset : layout.body_offset + layout.body_size]
    tail = container.trailer(frames, layout.body_size, sum(f.raw_len for f in frames))
    path.write_bytes(head + layout.key_slot + body + tail)
    forged = {k: v for k, v in row.items() if k != "mac"}
    return {**forged, "size": path.stat().st_size, "digest": container.root_digest(head, tail, layout.header.hash)}


def test_a_frame_relabelled_from_compressed_to_raw_is_refused(tmp_path) -> None:
    """With references unsigned, flipping a frame's method from zstd to raw (and its
    raw length to match) used to hand the reader the compressed bytes as the value."""
    engine = make_engine(tmp_path / "s", Keyset.generate(), sign_references=False,
                         compress_encrypted=("team_a_*",))
    value = b"compressible " * 50_000
    row = engine.serialize(value, COORD)
    path = object_path(engine, row)
    assert layout_of(path).frames[0].method == METHOD_ZSTD

    def to_raw(i: int, f: Frame) -> Frame:
        return dataclasses.replace(f, method=METHOD_RAW, raw_len=f.stored_len - stream.TAG_BYTES)

    forged = rewrite_table(path, row, to_raw)
    with pytest.raises(DecryptionError, match="authentication failed"):
        engine.deserialize(forged, COORD)


def test_a_padded_frames_raw_length_cannot_be_edited(tmp_path) -> None:
    """A padded frame's table entry cannot be checked against its stored length (the padding
    varies): the seal covers it instead."""
    engine = make_engine(tmp_path / "s", Keyset.generate(), sign_references=False)
    row = engine.serialize(b"x" * 5000, COORD)
    path = object_path(engine, row)
    # The padded last frame: claim fewer raw bytes (a truncated value) than it holds.
    forged = rewrite_table(path, row, lambda i, f: dataclasses.replace(f, raw_len=f.raw_len - 1000))
    with pytest.raises(DecryptionError):
        engine.deserialize(forged, COORD)


# ------------------------------------------------------------------ wrap keys


def test_each_objects_data_key_is_wrapped_under_a_key_of_its_own(tmp_path) -> None:
    """Not under the long-lived wrap subkey with random 96-bit nonces (GCM's limit would apply
    to that one key across every object ever written)."""
    keyset = Keyset.generate()
    engine = make_engine(tmp_path / "s", keyset)
    salts = set()
    for i in range(3):
        coordinate = XComCoordinate(COORD.dag_id, COORD.run_id, "t", i, "k")
        layout = layout_of(object_path(engine, engine.serialize({"i": i}, coordinate)))
        slot = stream.KeySlot.parse(layout.key_slot)
        assert layout.key_slot[:4] == b"XKS2" and slot.version == 2 and len(slot.salt) == 16
        salts.add(slot.salt)
        envelope = stream.Envelope.from_header(layout.header.encryption)
        aad = stream.scope_aad(layout.header_bytes, envelope, COORD.dag_id, COORD.run_id)
        for wrap_aad in (b"xcomstash-wrap-v1\x00", b"xcomstash-wrap-v2\x00"):
            with pytest.raises(InvalidTag):  # the long-lived subkey alone opens nothing
                AESGCM(keyset.primary.subkey(PURPOSE_WRAP)).decrypt(
                    slot.nonce, slot.wrapped, wrap_aad + keyset.primary_id.encode() + b"\x00" + aad
                )
        assert len(stream.unwrap(keyset, layout.key_slot, aad)) == 32
    assert len(salts) == 3


# ------------------------------------------------------------------ names


def test_encrypted_values_are_not_deduplicated_nor_named_by_their_content(tmp_path) -> None:
    """Dedup is on (the default), yet equal encrypted values get their own objects at their
    XCom's place: nothing in the bucket's names derives from the plaintext."""
    engine = make_engine(tmp_path / "s", Keyset.generate())
    assert engine.config.dedup
    value = b"the same secret payload" * 1000
    rows = [engine.serialize(value, XComCoordinate(COORD.dag_id, COORD.run_id, t, -1, "k")) for t in ("a", "b")]
    keys = [info.key for info in engine.store.list("")]
    assert sorted(keys) == sorted(engine.store.key_for(r["uri"]) for r in rows)
    assert not any(".blobs" in k or ".links" in k for k in keys)
    plain = Engine(StashConfig(store_url=f"file://{tmp_path / 'p'}", threshold=0))
    plain_row = plain.serialize(value, COORD)
    assert all(plain_row["digest"].split(":")[1] not in k for k in keys)
    assert all(hashlib.sha256(value).hexdigest() not in k for k in keys)
    assert rows[0]["digest"] != rows[1]["digest"]


# ------------------------------------------------------------------ version 1


def v1_rows(tmp_path: Path) -> tuple[Engine, Keyset, list[tuple[XComCoordinate, dict[str, Any]]]]:
    """The objects the first format wrote (kept as files), in a store under ``tmp_path``, with
    their references re-pointed there and re-signed (the signature covers the URI)."""
    keyset = Keyset.from_json((FIXTURE / "keyset.json").read_text())
    shutil.copytree(FIXTURE / "store", tmp_path / "s")
    engine = make_engine(tmp_path / "s", keyset)
    rows = []
    for entry in json.loads((FIXTURE / "rows.json").read_text()):
        coordinate = XComCoordinate(**entry["xcom"])
        row = {**entry["row"], "uri": engine.store.uri_for(coordinate.object_key())}
        rows.append((coordinate, signing.signed(keyset, row)))
    return engine, keyset, rows


V1_VALUES = {"bytes": b"fixture-v1-" * 300_000, "dict": {"a": [1, 2, 3], "b": "text" * 100}}


def test_objects_of_the_first_format_stay_readable(tmp_path) -> None:
    engine, keyset, rows = v1_rows(tmp_path)
    for coordinate, row in rows:
        layout = layout_of(object_path(engine, row))
        assert layout.header.encryption["alg"] == "aes256gcm-stream-v1" and layout.key_slot[:4] == b"XKS1"
        assert not layout.header.padded
        assert engine.deserialize(row, coordinate) == V1_VALUES[coordinate.task_id]
    # A first-format object is still bound to its XCom: row a pointed at b's object is refused.
    (a, row_a), (_, row_b) = rows
    migrating = make_engine(tmp_path / "s", keyset, sign_references=False)
    forged = {k: v for k, v in row_a.items() if k != "mac"} | {k: row_b[k] for k in ("uri", "size", "digest", "codec")}
    with pytest.raises(DecryptionError, match="written for"):
        migrating.deserialize(forged, a)


def test_first_format_objects_rewrapped_after_rotation_stay_readable(tmp_path) -> None:
    from xcomstash.commands.rewrap import rewrap_store

    engine, keyset, rows = v1_rows(tmp_path)
    rotated = keyset.rotated()
    summary = rewrap_store(engine.store, KeyRing.single(rotated))
    assert summary.rewrapped == 2 and not summary.failed
    only_new = make_engine(tmp_path / "s", rotated.without(keyset.primary_id), sign_references=False)
    for coordinate, row in rows:
        layout = layout_of(object_path(engine, row))
        assert layout.key_slot[:4] == b"XKS2" and layout.header.encryption["alg"] == "aes256gcm-stream-v1"
        assert only_new.deserialize(row, coordinate) == V1_VALUES[coordinate.task_id]

