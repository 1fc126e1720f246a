"""Alembic wiring shared by every service: config in code, async migrations, dated files.

A service keeps `migrations/` (env.py, script.py.mako, versions/) beside its package; its
env.py is two lines that call `run_migrations()`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
from alembic import command
from alembic.config import Config

#: The Alembic option holding the service's database URL as the pool takes it.
DSN_OPTION = "bazaar.database_url"

#: Revision files start with their date so `ls versions/` reads as a history.
FILE_TEMPLATE = "%%(year)d%%(month).2d%%(day).2d_%%(hour).2d%%(minute).2d_%%(rev)s_%%(slug)s"


def sqlalchemy_url(database_url: str) -> str:
    """The asyncpg dialect URL SQLAlchemy needs for a plain postgresql:// URL."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+asyncpg://" + database_url[len(prefix) :]
    raise ValueError("database URL must start with postgresql://")


def alembic_config(migrations_dir: Path, database_url: str) -> Config:
    """An Alembic Config for one service's migrations and database, without an .ini file."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("file_template", FILE_TEMPLATE)
    config.set_main_option("timezone", "UTC")
    # '%' must be doubled for configparser interpolation.
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    # Connections are made by asyncpg itself from the original URL, so libpq-style options
    # the pool accepts (sslmode=…, …) work here too instead of reaching SQLAlchemy's dialect.
    config.set_main_option(DSN_OPTION, database_url.replace("%", "%%"))
    return config


def upgrade(migrations_dir: Path, database_url: str, revision: str = "head") -> None:
    """Migrate the database up to `revision` (blocking: call from a thread inside a loop)."""
    command.upgrade(alembic_config(migrations_dir, database_url), revision)


def downgrade(migrations_dir: Path, database_url: str, revision: str = "base") -> None:
    """Migrate the database down to `revision` (blocking)."""
    command.downgrade(alembic_config(migrations_dir, database_url), revision)


def current(migrations_dir: Path, database_url: str) -> None:
    """Print the database's current revision."""
    command.current(alembic_config(migrations_dir, database_url), verbose=False)


def revision(migrations_dir: Path, database_url: str, message: str) -> None:
    """Create a new empty, date-prefixed revision file."""
    command.revision(alembic_config(migrations_dir, database_url), message=message)


def run_migrations() -> None:
    """Body of a service's migrations/env.py: run the migrations online over asyncpg."""
    from alembic import context
    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    dsn = context.config.get_main_option(DSN_OPTION)
    if dsn is None:
        raise RuntimeError(f"{DSN_OPTION} is not configured")

    async def _connect() -> Any:
        return await asyncpg.connect(dsn)

    def _run(connection: Connection) -> None:
        context.configure(
            connection=connection, target_metadata=None, transaction_per_migration=True
        )
        with context.begin_transaction():
            context.run_migrations()

    async def _main() -> None:
        engine = create_async_engine(
            "postgresql+asyncpg://", async_creator=_connect, poolclass=NullPool
        )
        try:
            async with engine.connect() as connection:
                await connection.run_sync(_run)
                await connection.commit()
        finally:
            await engine.dispose()

    if context.is_offline_mode():
        raise RuntimeError("offline (--sql) migrations are not supported; run them online")
    asyncio.run(_main())
