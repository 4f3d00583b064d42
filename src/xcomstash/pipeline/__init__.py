"""The stages a value passes through on push and pull."""
