"""Alembic migrations of the review store, run programmatically by ``ReviewStore.open``."""
