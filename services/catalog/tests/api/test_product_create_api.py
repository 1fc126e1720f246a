"""POST /v1/products: what is created, every limit on both sides, who may, and idempotency."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from bazaar.shared.testing.tokens import TokenIssuer

VALID = {
    "sku": "MUG-1",
    "name": "Mug",
    "description": "A mug.",
    "price_cents": 1290,
    "currency": "EUR",
    "stock": 5,
}
PRODUCT_FIELDS = {
    "id",
    "sku",
    "name",
    "description",
    "price_cents",
    "currency",
    "stock",
    "version",
    "created_at",
    "updated_at",
}


def with_(**changes: Any) -> dict[str, Any]:
    body = {**VALID, **changes}
    return {k: v for k, v in body.items() if v is not ...}


async def product_count(catalog_db: Any) -> int:
    return int(await catalog_db.fetchval("SELECT count(*) FROM product"))


async def test_a_valid_product_is_created_with_location_etag_and_body(
    client: httpx.AsyncClient, writer: dict[str, str], catalog_db: Any
) -> None:
    response = await client.post("/v1/products", json=VALID, headers=writer)

    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == PRODUCT_FIELDS
    assert {k: body[k] for k in VALID} == VALID
    assert body["version"] == 1
    assert response.headers["Location"] == f"/v1/products/{body['id']}"
    etag = response.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 2
    stored = await catalog_db.fetchrow("SELECT * FROM product WHERE sku = 'MUG-1'")
    assert str(stored["id"]) == body["id"]
    assert stored["stock"] == 5 and stored["price_cents"] == 1290


async def test_times_are_rfc3339_utc_and_description_and_stock_are_optional(
    client: httpx.AsyncClient, writer: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/products", json=with_(description=..., stock=...), headers=writer
    )

    assert response.status_code == 201
    body = response.json()
    assert body["description"] is None
    assert body["stock"] == 0
    for field in ("created_at", "updated_at"):
        moment = datetime.fromisoformat(body[field].replace("Z", "+00:00"))
        assert moment.utcoffset() == timedelta(0)


async def test_the_created_product_can_be_read_back_at_its_location(
    client: httpx.AsyncClient, writer: dict[str, str]
) -> None:
    created = await client.post("/v1/products", json=VALID, headers=writer)

    fetched = await client.get(created.headers["Location"])

    assert fetched.status_code == 200
    assert fetched.json() == created.json()
    assert fetched.headers["ETag"] == created.headers["ETag"]


async def test_creating_a_product_writes_a_catalog_product_created_event(
    client: httpx.AsyncClient, writer: dict[str, str], outbox_events: Any
) -> None:
    response = await client.post("/v1/products", json=VALID, headers=writer)

    events = await outbox_events("catalog.product.created")
    assert len(events) == 1
    event = events[0]
    assert event["subject"] == event["_row_subject"] == response.json()["id"]
    assert event["source"] == "/bazaar/catalog"
    assert event["specversion"] == "1.0"
    assert event["data"] == response.json()


async def test_events_carry_the_trace_of_the_request_that_caused_them(
    client: httpx.AsyncClient, writer: dict[str, str], outbox_events: Any
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"

    response = await client.post(
        "/v1/products",
        json=VALID,
        headers={**writer, "traceparent": traceparent},
    )

    assert response.headers["X-Trace-Id"] == trace_id
    (event,) = await outbox_events("catalog.product.created")
    assert event["traceparent"].split("-")[1] == trace_id


@pytest.mark.parametrize(
    "body",
    [
        with_(sku="A"),
        with_(sku="x" * 64),
        with_(sku="Az09._-"),
        with_(name="N"),
        with_(name="n" * 200),
        with_(name="é" * 200),
        with_(price_cents=0),
        with_(price_cents=100_000_000),
        with_(stock=0),
        with_(stock=1_000_000),
        with_(currency="USD"),
        with_(description=None),
    ],
    ids=[
        "sku-1-char",
        "sku-64-chars",
        "sku-every-allowed-character-class",
        "name-1-char",
        "name-200-chars",
        "name-200-non-ascii-chars",
        "price-0",
        "price-100000000",
        "stock-0",
        "stock-1000000",
        "currency-USD",
        "description-null",
    ],
)
async def test_values_at_the_limits_are_accepted(
    client: httpx.AsyncClient, writer: dict[str, str], body: dict[str, Any]
) -> None:
    response = await client.post("/v1/products", json=body, headers=writer)

    assert response.status_code == 201, response.text
    assert {k: response.json()[k] for k in body} == body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (with_(sku=""), "sku"),
        (with_(sku="x" * 65), "sku"),
        (with_(sku="has space"), "sku"),
        (with_(sku="slash/sku"), "sku"),
        (with_(sku="ümlaut"), "sku"),
        (with_(sku="MUG-1\n"), "sku"),
        (with_(sku=12), "sku"),
        (with_(sku=...), "sku"),
        (with_(name=""), "name"),
        (with_(name="n" * 201), "name"),
        (with_(name=None), "name"),
        (with_(name=...), "name"),
        (with_(price_cents=-1), "price_cents"),
        (with_(price_cents=100_000_001), "price_cents"),
        (with_(price_cents="12"), "price_cents"),
        (with_(price_cents=1.5), "price_cents"),
        (with_(price_cents=12.0), "price_cents"),
        (with_(price_cents=True), "price_cents"),
        (with_(price_cents=...), "price_cents"),
        (with_(currency="eur"), "currency"),
        (with_(currency="EURO"), "currency"),
        (with_(currency="EU"), "currency"),
        (with_(currency="€UR"), "currency"),
        (with_(currency=...), "currency"),
        (with_(stock=-1), "stock"),
        (with_(stock=1_000_001), "stock"),
        (with_(stock="5"), "stock"),
        (with_(stock=2.5), "stock"),
        (with_(stock=None), "stock"),
        (with_(id="00000000-0000-0000-0000-000000000001"), "id"),
        (with_(version=7), "version"),
        (with_(colour="red"), "colour"),
    ],
    ids=[
        "sku-empty",
        "sku-65-chars",
        "sku-space",
        "sku-slash",
        "sku-non-ascii",
        "sku-trailing-newline",
        "sku-number",
        "sku-missing",
        "name-empty",
        "name-201-chars",
        "name-null",
        "name-missing",
        "price-minus-1",
        "price-100000001",
        "price-string",
        "price-float",
        "price-integral-float",
        "price-boolean",
        "price-missing",
        "currency-lowercase",
        "currency-4-letters",
        "currency-2-letters",
        "currency-symbol",
        "currency-missing",
        "stock-minus-1",
        "stock-1000001",
        "stock-string",
        "stock-float",
        "stock-null",
        "unknown-field-id",
        "unknown-field-version",
        "unknown-field-colour",
    ],
)
async def test_an_invalid_product_answers_422_naming_the_field_and_creates_nothing(
    warm_client: httpx.AsyncClient,
    writer: dict[str, str],
    row_counts: Any,
    expect_problem: Any,
    body: dict[str, Any],
    field: str,
) -> None:
    before = await row_counts()

    response = await warm_client.post(
        "/v1/products", json=body, headers={**writer, "Idempotency-Key": "invalid-1"}
    )

    problem = expect_problem(response, 422, "validation-error")
    assert any(error["loc"][:2] == ["body", field] for error in problem["errors"]), problem
    assert await row_counts() == before


@pytest.mark.parametrize(
    "content",
    [
        b'{"sku": "MUG-1", "name": ',
        b"not json",
        b"",
        b"[]",
        b'"MUG-1"',
        b"null",
        b'{"sku": "MUG-\xff", "name": "Mug", "price_cents": 1, "currency": "EUR"}',
    ],
    ids=["truncated", "not-json", "empty", "array", "string", "null", "not-utf8"],
)
async def test_a_body_that_is_not_a_json_object_answers_422(
    warm_client: httpx.AsyncClient,
    writer: dict[str, str],
    expect_problem: Any,
    content: bytes,
) -> None:
    response = await warm_client.post(
        "/v1/products",
        content=content,
        headers={**writer, "Content-Type": "application/json"},
    )

    expect_problem(response, 422, "validation-error")


@pytest.mark.parametrize("field", ["name", "description"])
async def test_a_nul_character_that_cannot_be_stored_answers_422_not_500(
    warm_client: httpx.AsyncClient,
    writer: dict[str, str],
    row_counts: Any,
    expect_problem: Any,
    field: str,
) -> None:
    before = await row_counts()
    body = with_(sku=f"NUL-{field}", **{field: "before\u0000after"})

    response = await warm_client.post("/v1/products", json=body, headers=writer)

    problem = expect_problem(response, 422, "validation-error")
    assert any(field in error["loc"] for error in problem["errors"]), problem
    assert await row_counts() == before


@pytest.mark.parametrize(
    "key", ["", "x" * 256, "has space", "tab\there"], ids=["empty", "256-chars", "space", "tab"]
)
async def test_an_invalid_idempotency_key_is_refused_and_creates_nothing(
    warm_client: httpx.AsyncClient,
    writer: dict[str, str],
    row_counts: Any,
    key: str,
) -> None:
    before = await row_counts()

    response = await warm_client.post(
        "/v1/products", json=with_(sku="BAD-KEY"), headers={**writer, "Idempotency-Key": key}
    )

    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert await row_counts() == before


async def test_a_duplicate_sku_answers_409_conflict(
    client: httpx.AsyncClient, writer: dict[str, str], catalog_db: Any, expect_problem: Any
) -> None:
    await client.post("/v1/products", json=VALID, headers=writer)

    response = await client.post("/v1/products", json=with_(name="Other"), headers=writer)

    expect_problem(response, 409, "conflict")
    assert await product_count(catalog_db) == 1


async def test_without_a_token_it_answers_401_with_a_bearer_challenge(
    client: httpx.AsyncClient, catalog_db: Any, expect_problem: Any
) -> None:
    response = await client.post("/v1/products", json=VALID)

    expect_problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert await product_count(catalog_db) == 0


async def test_authentication_is_checked_before_the_body(
    client: httpx.AsyncClient, expect_problem: Any
) -> None:
    response = await client.post("/v1/products", json={"sku": ""})

    expect_problem(response, 401, "unauthorized")


@pytest.mark.parametrize(
    "kind",
    [
        "garbage",
        "expired",
        "not-yet-valid",
        "wrongly-signed",
        "unknown-kid",
        "alg-none",
        "hmac",
        "wrong-audience",
        "wrong-issuer",
        "no-expiry",
    ],
)
async def test_a_bad_token_answers_401_invalid_token(
    warm_client: httpx.AsyncClient,
    token_issuer: TokenIssuer,
    row_counts: Any,
    expect_problem: Any,
    kind: str,
) -> None:
    scopes = ["catalog:write"]
    forgeries: dict[str, Callable[[], str]] = {
        "garbage": lambda: "not-a-jwt",
        "expired": lambda: token_issuer.issue("admin-1", scopes, expires_in=-3600),
        "not-yet-valid": lambda: token_issuer.issue(
            "admin-1", scopes, claims={"nbf": int(time.time()) + 3600}
        ),
        "wrongly-signed": lambda: token_issuer.by_stranger(scopes=scopes),
        "unknown-kid": lambda: token_issuer.by_stranger("no-such-kid", scopes=scopes),
        "alg-none": lambda: token_issuer.unsigned(scopes=scopes),
        "hmac": lambda: token_issuer.hmac_with_public_key(scopes=scopes),
        "wrong-audience": lambda: token_issuer.issue("admin-1", scopes, claims={"aud": "other"}),
        "wrong-issuer": lambda: token_issuer.issue(
            "admin-1", scopes, claims={"iss": "https://evil.example"}
        ),
        "no-expiry": lambda: token_issuer.issue("admin-1", scopes, claims={"exp": None}),
    }
    token = forgeries[kind]()

    before = await row_counts()

    response = await warm_client.post(
        "/v1/products", json=VALID, headers={"Authorization": f"Bearer {token}"}
    )

    expect_problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert await row_counts() == before


@pytest.mark.parametrize(
    "scopes",
    [
        (),
        ("catalog:read",),
        ("catalog:reserve",),
        ("orders:write", "users:admin"),
        ("catalog:writer", "xcatalog:write", "catalog:write:all"),
    ],
    ids=["no-scope", "read", "reserve", "other-services", "look-alikes"],
)
async def test_a_token_without_catalog_write_answers_403_forbidden(
    warm_client: httpx.AsyncClient,
    auth: Any,
    row_counts: Any,
    expect_problem: Any,
    scopes: tuple[str, ...],
) -> None:
    before = await row_counts()

    response = await warm_client.post("/v1/products", json=VALID, headers=auth(*scopes))

    expect_problem(response, 403, "forbidden")
    assert await row_counts() == before


async def test_the_bearer_scheme_name_is_case_insensitive(
    warm_client: httpx.AsyncClient, token_issuer: TokenIssuer
) -> None:
    token = token_issuer.issue("admin-1", ["catalog:write"])

    response = await warm_client.post(
        "/v1/products",
        json=with_(sku=f"CASE-{time.time_ns()}"),
        headers={"Authorization": f"bearer {token}"},
    )

    assert response.status_code == 201, response.text


async def test_an_ec_signed_token_is_accepted(
    client: httpx.AsyncClient, token_issuer: TokenIssuer
) -> None:
    token = token_issuer.issue("admin-1", ["catalog:write"], key="ec")

    response = await client.post(
        "/v1/products", json=VALID, headers={"Authorization": f"Bearer {token}"}
    )

    assert response.status_code == 201


async def test_a_replay_with_the_same_idempotency_key_returns_the_first_answer(
    client: httpx.AsyncClient, writer: dict[str, str], catalog_db: Any, outbox_events: Any
) -> None:
    headers = {**writer, "Idempotency-Key": "create-mug-1"}
    first = await client.post("/v1/products", json=VALID, headers=headers)

    again = await client.post("/v1/products", json=VALID, headers=headers)

    assert first.status_code == again.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["content-type"] == "application/json"
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["ETag"] == first.headers["ETag"]
    assert await product_count(catalog_db) == 1
    assert len(await outbox_events("catalog.product.created")) == 1


async def test_the_same_idempotency_key_with_another_body_answers_422_mismatch(
    client: httpx.AsyncClient, writer: dict[str, str], catalog_db: Any, expect_problem: Any
) -> None:
    headers = {**writer, "Idempotency-Key": "create-mug-1"}
    await client.post("/v1/products", json=VALID, headers=headers)

    response = await client.post("/v1/products", json=with_(sku="MUG-2"), headers=headers)

    expect_problem(response, 422, "idempotency-key-mismatch")
    assert await product_count(catalog_db) == 1


async def test_a_409_duplicate_is_replayed_for_its_idempotency_key(
    client: httpx.AsyncClient, writer: dict[str, str], expect_problem: Any
) -> None:
    await client.post("/v1/products", json=VALID, headers=writer)
    headers = {**writer, "Idempotency-Key": "dup-1"}
    first = await client.post("/v1/products", json=with_(name="Copy"), headers=headers)

    again = await client.post("/v1/products", json=with_(name="Copy"), headers=headers)

    expect_problem(first, 409, "conflict")
    replayed = expect_problem(again, 409, "conflict")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert replayed == first.json()


async def test_different_idempotency_keys_create_different_products(
    client: httpx.AsyncClient, writer: dict[str, str], catalog_db: Any
) -> None:
    a = await client.post("/v1/products", json=VALID, headers={**writer, "Idempotency-Key": "a"})
    b = await client.post(
        "/v1/products", json=with_(sku="MUG-2"), headers={**writer, "Idempotency-Key": "b"}
    )

    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]
    assert await product_count(catalog_db) == 2
