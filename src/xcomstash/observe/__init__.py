"""Observation: one event per operation, and the audit, trace and metrics sinks that subscribe to it."""
