from __future__ import annotations

import pytest

from xcomstash.security import signing
from xcomstash.security.crypto.keyset import Keyset
from xcomstash.errors import KeyUnavailableError, ReferenceSignatureError

REF = {"__xcomstash__": 1, "uri": "file:///s/d/r/t/-1/k.xcs", "size": 10, "digest": "sha256:" + "0" * 64,
       "codec": "json", "type": "dict", "summary": "dict 1 keys", "xcom": ["d", "r", "t", -1, "k"]}


def test_signed_reference_verifies_and_names_its_key() -> None:
    ks = Keyset.generate()
    ref = signing.signed(ks, REF)
    assert signing.verify(ks, ref) == ks.primary_id
    assert signing.verify(ks, dict(reversed(list(ref.items())))) == ks.primary_id  # order-free


@pytest.mark.parametrize("field,value", [("uri", "file:///s/other.xcs"), ("size", 11), ("xcom", ["e", "r", "t", -1, "k"]),
                                         ("summary", "x"), ("extra", 1)])
def test_any_edit_breaks_the_mac(field, value) -> None:
    ks = Keyset.generate()
    ref = signing.signed(ks, REF)
    ref[field] = value
    with pytest.raises(ReferenceSignatureError, match="forged or edited"):
        signing.verify(ks, ref)


def test_unsigned_malformed_and_foreign_macs() -> None:
    ks = Keyset.generate()
    with pytest.raises(ReferenceSignatureError, match="not signed"):
        signing.verify(ks, REF)
    for mac in ("", "x", 5, None, "k1:" + "A" * 10, f"{ks.primary_id}:" + "!" * 43, "../x:" + "A" * 43):
        with pytest.raises(ReferenceSignatureError):
            signing.verify(ks, {**REF, "mac": mac})
    other = signing.signed(Keyset.generate(), REF)
    with pytest.raises(KeyUnavailableError):
        signing.verify(ks, other)


def test_rotated_keyset_still_verifies_old_references_and_signs_with_the_new_key() -> None:
    ks = Keyset.generate()
    old = signing.signed(ks, REF)
    rotated = ks.rotated()
    assert signing.verify(rotated, old) == ks.primary_id
    assert signing.verify(rotated, signing.signed(rotated, REF)) == rotated.primary_id
