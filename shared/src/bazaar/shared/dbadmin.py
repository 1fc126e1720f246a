"""Creating a service's database on its server (make up, tests, Kubernetes Jobs)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg


async def ensure_database(url: str, *, maintenance_db: str = "postgres") -> bool:
    """Create the database named in `url` if it is missing; True if it was created."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name:
        raise ValueError("the database URL names no database")
    admin_url = urlunsplit(parts._replace(path="/" + maintenance_db))
    conn = await asyncpg.connect(admin_url)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:
            return False  # another process created it first
        return True
    finally:
        await conn.close()
