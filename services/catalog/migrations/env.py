"""Alembic environment of the catalog: the shared runner does the work."""

from bazaar.shared.migrations import run_migrations

run_migrations()
