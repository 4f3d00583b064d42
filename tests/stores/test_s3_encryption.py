"""Encryption on a real S3 (SeaweedFS): multipart streaming of sealed frames, ranged reads and
in-place decryption, the read cache, tampering detected, and re-wrapping through S3."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from xcomstash.commands.rewrap import rewrap_store
from xcomstash.config import StashConfig
from xcomstash.coordinate import XComCoordinate
from xcomstash.security.crypto.keyset import KeyRing, Keyset
from xcomstash.engine import Engine
from xcomstash.errors import IntegrityError, KeyUnavailableError
from xcomstash.security.guard import Guard, SecurityConfig

pytestmark = pytest.mark.s3


def make(s3_client, keyset: Keyset, cache_dir=None) -> Engine:
    guard = Guard(SecurityConfig(keyring=KeyRing.single(keyset), encrypt=True, sign_references=True))
    config = StashConfig(store_url="s3://xcom/encrypted", threshold=0, read_ahead=False, cache_dir=cache_dir)
    return Engine(config, clients=lambda location: s3_client, guard=guard)


@pytest.fixture
def coordinate() -> XComCoordinate:
    return XComCoordinate("enc_dag", f"manual__{uuid.uuid4().hex}", "produce", -1, "return_value")


def test_large_value_round_trips_encrypted_through_multipart_and_cache(s3_client, coordinate, tmp_path) -> None:
    keyset = Keyset.generate()
    value = np.random.default_rng(3).standard_normal(3_000_000)  # 24 MB: multipart, many frames
    engine = make(s3_client, keyset, cache_dir=str(tmp_path / "cache"))
    row = engine.serialize(value, coordinate)
    key = engine.store.key_for(row["uri"])
    raw = s3_client.get_object(Bucket="xcom", Key=f"encrypted/{key}")["Body"].read()
    assert value.tobytes()[1000:1064] not in raw
    assert np.array_equal(engine.deserialize(row, coordinate), value)
    assert np.array_equal(engine.deserialize(row, coordinate), value)  # from the read cache

    data = bytearray(raw)
    data[len(data) // 3] ^= 0x10
    s3_client.put_object(Bucket="xcom", Key=f"encrypted/{key}", Body=bytes(data))
    fresh = make(s3_client, keyset)
    with pytest.raises(IntegrityError):
        fresh.deserialize(row, coordinate)


def test_rewrap_on_s3_then_old_key_removed(s3_client, coordinate, tmp_path) -> None:
    k1 = Keyset.generate()
    first = make(s3_client, k1, cache_dir=str(tmp_path / "cache"))
    value = np.arange(200_000, dtype="float64")
    row = first.serialize(value, coordinate)
    assert np.array_equal(first.deserialize(row, coordinate), value)  # now in the cache, key 1 slot
    k2 = k1.rotated()
    summary = rewrap_store(first.store, KeyRing.single(k2), prefix=f"{coordinate.dag_id}/{coordinate.run_id}")
    assert summary.rewrapped >= 1 and summary.failed == []
    only_k2 = Keyset.from_json(k2.without(k1.primary_id).to_json())
    reader = make(s3_client, only_k2, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(KeyUnavailableError):  # the row itself is still signed by key 1
        reader.deserialize(row, coordinate)
    from xcomstash.security import signing

    resigned = signing.signed(k2, row)
    # The cached copy (key 1 slot) is dropped and the re-wrapped object fetched.
    assert np.array_equal(reader.deserialize(resigned, coordinate), value)
