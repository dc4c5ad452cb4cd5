"""Pluggable policies for a processhub hub: distribution, redundancy, migration,
synchronization and partition handling. Each depends only on ``hub``'s public interfaces."""

__all__: list[str] = []
