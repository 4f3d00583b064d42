"""Kept for the tests that import real-server helpers from here (tests/stores, ...): everything
lives in :mod:`tests.harness.servers` now."""

from tests.harness.servers import *  # noqa: F401,F403
from tests.harness.servers import __all__  # noqa: F401
