"""Alembic environment of the orders: the shared runner does the work."""

from bazaar.shared.migrations import run_migrations

run_migrations()
