"""A reuse detected while a successor is being issued still revokes that successor."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from bazaar.auth.adapters.credentials import RefreshTokenRepository

PASSWORD = "correct horse battery"


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(
        "/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": token}
    )


@pytest.mark.parametrize("victim_action", ["replay", "revoke"])
async def test_a_thiefs_successor_issued_during_the_reuse_is_revoked_too(
    client: httpx.AsyncClient,
    register: Callable[..., Awaitable[dict[str, Any]]],
    token: Callable[..., Awaitable[httpx.Response]],
    monkeypatch: pytest.MonkeyPatch,
    victim_action: str,
) -> None:
    await register(email="ada@example.com", password=PASSWORD)
    login = await token(grant_type="password", username="ada@example.com", password=PASSWORD)
    first = login.json()["refresh_token"]
    second = (await _refresh(client, first)).json()["refresh_token"]  # first is now spent

    # The thief's refresh of `second` stops right after inserting its successor, inside
    # its transaction (holding the family's lock), until we let it go on.
    inserted, release = asyncio.Event(), asyncio.Event()
    original_add = RefreshTokenRepository.add

    async def paused_add(self: RefreshTokenRepository, *args: Any, **kwargs: Any) -> None:
        await original_add(self, *args, **kwargs)
        inserted.set()
        await release.wait()

    monkeypatch.setattr(RefreshTokenRepository, "add", paused_add)
    thief = asyncio.create_task(_refresh(client, second))
    await asyncio.wait_for(inserted.wait(), 5)

    if victim_action == "replay":  # the victim presents the spent token: reuse detected
        victim = asyncio.create_task(_refresh(client, first))
    else:  # the victim logs out with the token it holds
        victim = asyncio.create_task(client.post("/v1/auth/revoke", data={"token": first}))
    await asyncio.sleep(0.3)  # the victim now waits for the family's lock
    release.set()
    thiefs = (await thief).json()
    victims = await victim
    monkeypatch.setattr(RefreshTokenRepository, "add", original_add)

    assert victims.status_code == (400 if victim_action == "replay" else 200)
    stolen_successor = thiefs["refresh_token"]
    answer = await _refresh(client, stolen_successor)
    assert answer.status_code == 400, "the thief's new token must be revoked with its family"
    assert answer.json()["error"] == "invalid_grant"
