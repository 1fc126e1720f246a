"""Real tokens from the auth service, verified by catalog through auth's JWKS over HTTP."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx
import jwt
from pydantic import SecretStr

from bazaar.auth.adapters.keyring import KeyRing
from bazaar.auth.app import create_app as create_auth
from bazaar.auth.config import AuthSettings, ClientConfig
from bazaar.catalog.app import create_app as create_catalog
from bazaar.catalog.config import CatalogSettings
from bazaar.shared.app import database_for
from bazaar.shared.testing.asgi import serve_in_process
from bazaar.shared.testing.server import serve_on_socket

ISSUER = "http://gateway.system.test"
ADMIN = ("admin@system.test", "system-admin-password")
ORDERS_SECRET = "system-orders-client-secret"


def auth_settings(url: str) -> AuthSettings:
    return AuthSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=url,
        jwt_issuer=ISSUER,
        admin_email=ADMIN[0],
        admin_password=SecretStr(ADMIN[1]),
        clients=(
            ClientConfig(
                client_id="orders", secret=SecretStr(ORDERS_SECRET), scopes=("catalog:reserve",)
            ),
        ),
        key_cache_seconds=0.05,
    )


def catalog_settings(url: str, auth_url: str) -> CatalogSettings:
    return CatalogSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=url,
        jwt_jwks_url=f"{auth_url}/.well-known/jwks.json",
        jwt_issuer=ISSUER,
    )


async def _password_token(auth: httpx.AsyncClient, email: str, password: str) -> str:
    response = await auth.post(
        "/v1/auth/token", data={"grant_type": "password", "username": email, "password": password}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


PRODUCT = {"name": "Through auth", "price_cents": 500, "currency": "EUR", "stock": 5}


async def test_catalog_checks_scopes_on_real_tokens_and_follows_a_key_rotation(
    system_databases: dict[str, str],
) -> None:
    settings = auth_settings(system_databases["auth"])
    async with (
        serve_on_socket(create_auth(settings)) as auth_url,
        httpx.AsyncClient(base_url=auth_url) as auth,
        serve_in_process(
            create_catalog(catalog_settings(system_databases["catalog"], auth_url))
        ) as catalog,
    ):
        admin = await _password_token(auth, *ADMIN)
        created = await catalog.post(
            "/v1/products", json={**PRODUCT, "sku": "SYS-1"}, headers=_bearer(admin)
        )
        assert created.status_code == 201, created.text

        registered = await auth.post(
            "/v1/users",
            json={"email": "carol@system.test", "password": "carols long password", "name": "C"},
        )
        assert registered.status_code == 201
        customer = await _password_token(auth, "carol@system.test", "carols long password")
        refused = await catalog.post(
            "/v1/products", json={**PRODUCT, "sku": "SYS-2"}, headers=_bearer(customer)
        )
        assert refused.status_code == 403
        assert refused.json()["type"].endswith("/forbidden")

        service = await auth.post(
            "/v1/auth/token",
            data={"grant_type": "client_credentials", "scope": "catalog:reserve"},
            auth=("orders", ORDERS_SECRET),
        )
        assert service.status_code == 200, service.text
        reserved = await catalog.post(
            "/v1/reservations",
            json={
                "order_id": str(uuid.uuid4()),
                "lines": [{"product_id": created.json()["id"], "quantity": 2}],
            },
            headers={**_bearer(service.json()["access_token"]), "Idempotency-Key": "sys-1"},
        )
        assert reserved.status_code == 201, reserved.text

        # Rotation drill: a new key, signing at once; old tokens keep verifying.
        old_kid = jwt.get_unverified_header(admin)["kid"]
        db = database_for(settings)
        await db.open()
        try:
            new_kid = await KeyRing(db, settings).rotate(timedelta(0))
        finally:
            await db.close()
        await asyncio.sleep(0.1)  # past auth's key cache
        rotated = await _password_token(auth, *ADMIN)
        assert jwt.get_unverified_header(rotated)["kid"] == new_kid != old_kid

        for token, sku in ((rotated, "SYS-3"), (admin, "SYS-4")):
            response = await catalog.post(
                "/v1/products", json={**PRODUCT, "sku": sku}, headers=_bearer(token)
            )
            assert response.status_code == 201, response.text

        forged = jwt.encode(
            jwt.decode(admin, options={"verify_signature": False}),
            "a-shared-secret-an-attacker-chose-32b",
            algorithm="HS256",
            headers={"kid": new_kid, "typ": "at+jwt"},
        )
        refused = await catalog.post(
            "/v1/products", json={**PRODUCT, "sku": "SYS-5"}, headers=_bearer(forged)
        )
        assert refused.status_code == 401
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
