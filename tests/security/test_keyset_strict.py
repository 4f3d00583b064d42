"""Keyset secrets decode strictly, and errors never echo key material (finding 19).

Lenient base64 accepted a secret with junk characters (spaces, ``+``/``/`` from the standard
alphabet, a trailing quote) and silently turned it into another key. And a secret pasted
into ``id`` by mistake was echoed in the error, into logs."""

from __future__ import annotations

import json

import pytest

from xcomstash.errors import ConfigError, KeyUnavailableError
from xcomstash.security.crypto.keyset import Keyset, load_keyset


def _doc(keyset: Keyset) -> dict:
    return json.loads(keyset.to_json())


def _secret(keyset: Keyset) -> str:
    return _doc(keyset)["keys"][0]["secret"]


@pytest.mark.parametrize(
    "junk",
    [
        lambda s: s + " ",
        lambda s: " " + s,
        lambda s: s[:20] + "\n" + s[20:],
        lambda s: s[:10] + "+" + s[11:],  # standard alphabet, not base64url
        lambda s: s[:10] + "/" + s[11:],
        lambda s: s + '"',
        lambda s: s + "==",  # wrong padding for 32 bytes
        lambda s: s + "A",  # one character too many
        lambda s: s[:-1] + ("B" if s[-1] != "B" else "C"),  # stray bits in the last character
        lambda s: s[:21] + "!" + s[22:],
    ],
)
def test_secret_with_junk_characters_is_rejected_naming_source_and_key_id(junk, monkeypatch) -> None:
    keyset = Keyset.generate()
    doc = _doc(keyset)
    doc["keys"][0]["secret"] = junk(doc["keys"][0]["secret"])
    monkeypatch.setenv("XCS_KEYSET", json.dumps(doc))
    with pytest.raises(ConfigError) as err:
        load_keyset("env:XCS_KEYSET")
    message = str(err.value)
    assert "env:XCS_KEYSET" in message and keyset.primary_id in message
    assert doc["keys"][0]["secret"].strip() not in message and _secret(keyset) not in message


def test_canonical_secret_with_or_without_padding_is_accepted() -> None:
    keyset = Keyset.generate()
    doc = _doc(keyset)
    doc["keys"][0]["secret"] += "="  # 43 characters + the one padding character
    again = Keyset.from_json(json.dumps(doc))
    assert again.primary.secret == keyset.primary.secret


def test_secret_put_in_id_is_never_echoed() -> None:
    keyset = Keyset.generate()
    doc = _doc(keyset)
    secret = doc["keys"][0]["secret"]
    doc["keys"][0]["id"] = secret
    doc["primary"] = secret
    with pytest.raises(ConfigError) as err:
        Keyset.from_json(json.dumps(doc), source="keyset file /etc/k.json")
    assert secret not in str(err.value) and secret[:12] not in str(err.value)
    assert "keyset file /etc/k.json" in str(err.value) and "key #0" in str(err.value)


def test_hex_secret_in_a_valid_looking_id_is_not_echoed_either() -> None:
    keyset = Keyset.generate()
    doc = _doc(keyset)
    hex_secret = keyset.primary.secret.hex()[:40]  # valid id characters, 40 long
    doc["primary"] = hex_secret
    with pytest.raises(ConfigError) as err:
        Keyset.from_json(json.dumps(doc))
    assert hex_secret not in str(err.value) and hex_secret[:20] not in str(err.value)


def test_unknown_key_id_that_looks_like_a_secret_is_not_echoed() -> None:
    keyset = Keyset.generate()
    secret = _secret(keyset)
    with pytest.raises(KeyUnavailableError) as err:
        keyset.get(secret)
    assert secret not in str(err.value) and keyset.primary_id in str(err.value)
    with pytest.raises(KeyUnavailableError) as err2:
        keyset.rotated().without(secret[:40])
    assert secret[:40] not in str(err2.value)
