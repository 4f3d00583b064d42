"""Keysets, authenticated encryption of stored objects, and key rotation.

- :mod:`xcomstash.security.crypto.keyset`: keys, keysets (primary + older), per-DAG-pattern keyrings,
  key sources (env var, file, Airflow Variable through the adapter), 0600 key files.
- :mod:`xcomstash.security.crypto.stream`: the streaming AEAD (per-object data key wrapped under the
  primary key; AES-256-GCM frames with STREAM nonces; associated data binding header and scope).
"""

from xcomstash.security.crypto.keyset import (
    Key,
    KeyRing,
    Keyset,
    load_keyring,
    load_keyset,
    read_keyset_file,
    write_keyset_file,
)
from xcomstash.security.crypto.stream import (
    KEY_SLOT_BYTES,
    Envelope,
    FrameCipher,
    Scope,
    new_data_key,
    object_aad,
    rewrap,
    slot_key_id,
    unwrap,
    wrap,
)

__all__ = [
    "KEY_SLOT_BYTES",
    "Envelope",
    "FrameCipher",
    "Key",
    "KeyRing",
    "Keyset",
    "Scope",
    "load_keyring",
    "load_keyset",
    "new_data_key",
    "object_aad",
    "read_keyset_file",
    "rewrap",
    "slot_key_id",
    "unwrap",
    "wrap",
    "write_keyset_file",
]
