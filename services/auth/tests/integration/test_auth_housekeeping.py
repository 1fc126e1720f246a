"""Housekeeping deletes expired refresh tokens and forgotten login failures, nothing else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx

from bazaar.auth.adapters.uow import SqlUnitsOfWork
from bazaar.auth.config import AuthSettings
from bazaar.auth.service.tokens import purge_stale
from bazaar.shared.app import database_for

PASSWORD = "correct horse battery"


async def test_stale_rows_are_purged_and_live_ones_kept(
    client: httpx.AsyncClient,
    register: Callable[..., Awaitable[dict[str, Any]]],
    token: Callable[..., Awaitable[httpx.Response]],
    auth_settings: AuthSettings,
) -> None:
    await register(email="ada@example.com", password=PASSWORD)
    await token(grant_type="password", username="ada@example.com", password=PASSWORD)
    await token(grant_type="password", username="ada@example.com", password=PASSWORD)
    for who in ("old@example.com", "recent@example.com", "blocked@example.com"):
        await token(grant_type="password", username=who, password="wrong password!")
    conn = await asyncpg.connect(auth_settings.dsn())
    try:
        await conn.execute(
            "UPDATE refresh_token SET expires_at = now() - interval '2 days' WHERE id ="
            " (SELECT id FROM refresh_token ORDER BY created_at LIMIT 1)"
        )
        await conn.execute(
            "UPDATE login_throttle SET last_failed_at = now() - interval '1 hour'"
            " WHERE email_key IN ('old@example.com', 'blocked@example.com')"
        )
        await conn.execute(
            "UPDATE login_throttle SET blocked_until = now() + interval '5 minutes'"
            " WHERE email_key = 'blocked@example.com'"
        )

        db = database_for(auth_settings)
        await db.open()
        try:
            counts = await purge_stale(uows=SqlUnitsOfWork(db))
        finally:
            await db.close()

        assert counts == {"refresh_tokens": 1, "login_throttle": 1}
        assert await conn.fetchval("SELECT count(*) FROM refresh_token") == 1
        kept = {r["email_key"] for r in await conn.fetch("SELECT email_key FROM login_throttle")}
        assert kept == {"recent@example.com", "blocked@example.com"}
    finally:
        await conn.close()
