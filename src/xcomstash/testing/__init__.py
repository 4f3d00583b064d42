"""Test helpers shipped with xcomstash, for checking your own stores and deployments.

- :mod:`xcomstash.testing.store_contract`: the contract every :class:`~xcomstash.stores.Store`
  and wrapper passes (needs pytest).
- :class:`xcomstash.stores.FaultyStore`: fault injection around any store.

Importing this package registers the contract module for pytest's assertion rewriting, so a
failing contract check shows the values compared, as in a test file.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("xcomstash.testing.store_contract")

from xcomstash.testing.store_contract import (  # noqa: E402  (after the rewrite hook)
    AWKWARD_COORDINATES,
    Boom,
    StoreContract,
    read_via_sources,
    write,
)

__all__ = ["AWKWARD_COORDINATES", "Boom", "StoreContract", "read_via_sources", "write"]
