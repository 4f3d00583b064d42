"""Subcommands of the ``xcomstash`` operator CLI, one module each.

Each module exposes ``register(subparsers)``, which adds its parser(s) and sets
``func=<callable(args) -> int>`` as the parser default. :mod:`xcomstash.cli` imports the
modules listed in :data:`COMMAND_MODULES` lazily, so ``xcomstash --help`` stays fast and a
command that needs Airflow imports it only when it runs.
"""

from __future__ import annotations

#: Module names under ``xcomstash.commands``, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "check", "get", "inspect", "move", "reconcile", "verify", "repair", "retention", "stats", "migrate", "audit", "keys"
)
