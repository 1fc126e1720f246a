"""What the soak sets up through the gateway before the load: products and customers."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
from chaos_load import Customer

ADMIN = ("admin@bazaar.local", "dev-admin-password")  # auth's development admin


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with session.request(method, url, **kwargs) as answer:
        return answer.status, await answer.json(content_type=None)


async def _token(session: aiohttp.ClientSession, gateway: str, email: str, password: str) -> str:
    form = {"grant_type": "password", "username": email, "password": password}
    status, body = await _call(session, "POST", f"{gateway}/v1/auth/token", data=form)
    if status != 200:
        raise RuntimeError(f"login of {email}: {status} {body}")
    return str(body["access_token"])


async def products(gateway: str, stocks: list[int]) -> dict[str, int]:
    """Create one product per stock figure (as the admin); their ids and initial stock."""
    async with aiohttp.ClientSession() as session:
        admin = {"Authorization": f"Bearer {await _token(session, gateway, *ADMIN)}"}
        created: dict[str, int] = {}
        tag = uuid.uuid4().hex[:6].upper()
        for number, stock in enumerate(stocks):
            product = {
                "sku": f"CHAOS-{tag}-{number}",
                "name": f"Chaos product {number}",
                "price_cents": 100 + number,
                "currency": "EUR",
                "stock": stock,
            }
            status, body = await _call(
                session, "POST", f"{gateway}/v1/products", json=product, headers=admin
            )
            if status != 201:
                raise RuntimeError(f"creating a product: {status} {body}")
            created[str(body["id"])] = stock
        return created


async def _customer(session: aiohttp.ClientSession, gateway: str, number: int) -> Customer:
    email = f"chaos-{uuid.uuid4().hex[:10]}-{number}@soak.test"
    password = "chaos soak customer password"
    user = {"email": email, "password": password, "name": f"Chaos {number}"}
    status, body = await _call(session, "POST", f"{gateway}/v1/users", json=user)
    if status != 201:
        raise RuntimeError(f"registering {email}: {status} {body}")
    return Customer(email, await _token(session, gateway, email, password), str(body["id"]))


async def customers(gateway: str, count: int) -> list[Customer]:
    """Register `count` customers through the gateway and log each in."""
    async with aiohttp.ClientSession() as session:
        return list(await asyncio.gather(*(_customer(session, gateway, n) for n in range(count))))
