"""The stored object: its container (header, frames, footer), compression, the reference kept in the xcom row, and the key space of a store."""
