"""Alembic migrations of the saga tables, shipped in the wheel as ``saga_store.migrations``."""
