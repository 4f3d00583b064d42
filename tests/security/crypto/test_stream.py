"""The streaming AEAD on its own: every way a body, key slot or scope can be wrong is a typed
error, never plaintext."""

from __future__ import annotations

import pytest

from xcomstash.security.crypto import stream
from xcomstash.security.crypto.keyset import Keyset
from xcomstash.security.crypto.stream import (
    KEY_SLOT_BYTES,
    TAG_BYTES,
    Envelope,
    FrameCipher,
    KeySlot,
    Scope,
    new_data_key,
    object_aad,
    rewrap,
    slot_key_id,
    unwrap,
    wrap,
)
from xcomstash.errors import ConfigError, DecryptionError, KeyUnavailableError

HEADER = b'{"codec":"bytes","format":1}'
FRAMES = [b"a" * 100, b"b" * 100, b"c" * 7]


def seal_object(keyset: Keyset, scope: Scope, header: bytes = HEADER, frames=FRAMES):
    envelope = Envelope.new()
    aad = object_aad(header, scope)
    data_key = new_data_key()
    cipher = FrameCipher(data_key, envelope, aad)
    sealed = [cipher.seal(i, i == len(frames) - 1, f) for i, f in enumerate(frames)]
    return envelope, wrap(keyset, data_key, aad), sealed


def open_object(keyset: Keyset, scope: Scope, envelope, slot, sealed, header: bytes = HEADER):
    aad = object_aad(header, scope)
    cipher = FrameCipher(unwrap(keyset, slot, aad), envelope, aad)
    return [cipher.open(i, i == len(sealed) - 1, f) for i, f in enumerate(sealed)]


@pytest.fixture
def keyset() -> Keyset:
    return Keyset.generate()


def test_round_trip_and_ciphertext_is_plaintext_plus_tag(keyset) -> None:
    scope = Scope("dag_a")
    envelope, slot, sealed = seal_object(keyset, scope)
    assert len(slot) == KEY_SLOT_BYTES and slot_key_id(slot) == keyset.primary_id
    assert [len(s) for s in sealed] == [len(f) + TAG_BYTES for f in FRAMES]
    assert all(f not in s for f, s in zip(FRAMES, sealed))
    assert open_object(keyset, scope, envelope, slot, sealed) == FRAMES


@pytest.mark.parametrize("into", [True, False], ids=["cryptography-47+", "older-cryptography"])
def test_seal_into_and_open_into_work_in_place_with_and_without_the_into_api(keyset, into, monkeypatch) -> None:
    """Without ``encrypt_into``/``decrypt_into`` (cryptography before 47, as Airflow 3.1's
    constraints pin) the same bytes are sealed and opened through a copy."""
    monkeypatch.setattr(stream, "_INTO", into)
    envelope, slot, sealed = seal_object(keyset, Scope("d"))
    aad = object_aad(HEADER, Scope("d"))
    cipher = FrameCipher(unwrap(keyset, slot, aad), envelope, aad)
    target = bytearray(len(FRAMES[0]))
    cipher.open_into(0, False, sealed[0], memoryview(target))
    assert bytes(target) == FRAMES[0]
    with pytest.raises(DecryptionError):
        cipher.open_into(0, False, sealed[0], memoryview(bytearray(5)))
    resealed = bytearray(len(FRAMES[0]) + TAG_BYTES)
    cipher.seal_into(0, False, memoryview(FRAMES[0]), memoryview(resealed))
    assert cipher.open(0, False, bytes(resealed)) == FRAMES[0]
    with pytest.raises(DecryptionError):
        cipher.open(1, False, bytes(resealed))  # sealed as frame 0: bound to its index
    with pytest.raises(ValueError, match="plaintext length plus the tag"):
        cipher.seal_into(0, False, memoryview(FRAMES[0]), memoryview(bytearray(len(FRAMES[0]))))


def test_same_plaintext_encrypts_differently_each_time(keyset) -> None:
    _, _, one = seal_object(keyset, Scope("d"))
    _, _, two = seal_object(keyset, Scope("d"))
    assert one != two


def test_wrong_keyset_is_key_unavailable(keyset) -> None:
    envelope, slot, sealed = seal_object(keyset, Scope("d"))
    with pytest.raises(KeyUnavailableError):
        open_object(Keyset.generate(), Scope("d"), envelope, slot, sealed)


def test_same_key_id_with_other_secret_fails_authentication(keyset) -> None:
    envelope, slot, sealed = seal_object(keyset, Scope("d"))
    impostor = Keyset.from_json(keyset.to_json().replace(keyset.to_json().split('"secret": "')[1][:43], "A" * 43))
    with pytest.raises(DecryptionError):
        open_object(impostor, Scope("d"), envelope, slot, sealed)


@pytest.mark.parametrize("scope", [Scope("dag_b"), Scope("dag_a", "run_1"), Scope("dag_a\x00")])
def test_other_scope_fails(keyset, scope) -> None:
    envelope, slot, sealed = seal_object(keyset, Scope("dag_a"))
    with pytest.raises(DecryptionError, match="scope"):
        open_object(keyset, scope, envelope, slot, sealed)


def test_run_scope_binds_the_run(keyset) -> None:
    envelope, slot, sealed = seal_object(keyset, Scope("d", "r1"))
    assert open_object(keyset, Scope("d", "r1"), envelope, slot, sealed) == FRAMES
    with pytest.raises(DecryptionError):
        open_object(keyset, Scope("d", "r2"), envelope, slot, sealed)


def test_tampered_header_fails(keyset) -> None:
    envelope, slot, sealed = seal_object(keyset, Scope("d"))
    with pytest.raises(DecryptionError):
        open_object(keyset, Scope("d"), envelope, slot, sealed, header=HEADER.replace(b"bytes", b"bytez"))


def test_flipped_body_bit_fails(keyset) -> None:
    envelope, slot, sealed = seal_object(keyset, Scope("d"))
    bad = bytearray(sealed[1])
    bad[3] ^= 1
    with pytest.raises(DecryptionError, match="frame 1"):
        open_object(keyset, Scope("d"), envelope, slot, [sealed[0], bytes(bad), sealed[2]])


def test_truncated_body_fails_even_at_a_frame_boundary(keyset) -> None:
    envelope, slot, sealed = seal_object(keyset, Scope("d"))
    with pytest.raises(DecryptionError, match="last frame"):
        open_object(keyset, Scope("d"), envelope, slot, sealed[:2])
    with pytest.raises(DecryptionError):
        open_object(keyset, Scope("d"), envelope, slot, [sealed[0], sealed[1], sealed[2][:-1]])


def test_reordered_frames_fail(keyset) -> None:
    envelope, slot, sealed = seal_object(keyset, Scope("d"), frames=[b"x" * 10, b"y" * 10, b"z"])
    with pytest.raises(DecryptionError):
        open_object(keyset, Scope("d"), envelope, slot, [sealed[1], sealed[0], sealed[2]])


def test_frames_or_slot_swapped_between_objects_fail(keyset) -> None:
    e1, s1, f1 = seal_object(keyset, Scope("d"))
    e2, s2, f2 = seal_object(keyset, Scope("d"))
    with pytest.raises(DecryptionError):
        open_object(keyset, Scope("d"), e1, s1, [f1[0], f2[1], f1[2]])
    with pytest.raises(DecryptionError):
        open_object(keyset, Scope("d"), e1, s2, f1)  # the other object's data key
    with pytest.raises(DecryptionError):
        open_object(keyset, Scope("d"), e2, s1, f1)  # another nonce prefix


def test_malformed_slots_are_decryption_errors(keyset) -> None:
    _, slot, _ = seal_object(keyset, Scope("d"))
    aad = object_aad(HEADER, Scope("d"))
    for bad in (slot[:-1], b"\x00" * KEY_SLOT_BYTES, slot[:-1] + b"\x01", b"XKS1" + b"\xff" * 124):
        with pytest.raises(DecryptionError):
            unwrap(keyset, bad, aad)
    flipped = bytearray(slot)
    flipped[60] ^= 1  # inside the wrapped key
    with pytest.raises(DecryptionError):
        unwrap(keyset, bytes(flipped), aad)


def test_rewrap_moves_an_object_to_the_new_primary_without_touching_frames(keyset) -> None:
    scope = Scope("d")
    envelope, slot, sealed = seal_object(keyset, scope)
    rotated = keyset.rotated()
    aad = object_aad(HEADER, scope)
    new_slot = rewrap(rotated, slot, aad)
    assert new_slot is not None and slot_key_id(new_slot) == rotated.primary_id
    assert rewrap(rotated, new_slot, aad) is None  # already under the primary: nothing to do
    only_new = rotated.without(keyset.primary_id)
    assert open_object(only_new, scope, envelope, new_slot, sealed) == FRAMES
    with pytest.raises(KeyUnavailableError):
        open_object(only_new, scope, envelope, slot, sealed)


def test_envelope_header_round_trip_and_validation() -> None:
    env = Envelope.new("run")
    assert Envelope.from_header(env.to_header()) == env
    for bad in (None, {}, {**env.to_header(), "alg": "rot13"}, {**env.to_header(), "nonce_prefix": "zz"},
                {**env.to_header(), "scope": "task"}, {**env.to_header(), "key_slot": 64},
                {**env.to_header(), "nonce_prefix": "00" * 8}):
        with pytest.raises(DecryptionError):
            Envelope.from_header(bad)
    with pytest.raises(ConfigError):
        Envelope.new("task")


def test_slot_parse_round_trip() -> None:
    slot = KeySlot("k01234567", b"n" * 12, b"w" * 48)
    assert KeySlot.parse(slot.to_bytes()) == slot
