"""Alembic environment of the auth: the shared runner does the work."""

from bazaar.shared.migrations import run_migrations

run_migrations()
