"""Rate limiting through the running gateway (API.md "Rate limiting"): headers, exactness,
per-address counting, X-Forwarded-For, the token policy, and Redis shared by two gateways."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio
from aiohttp import web

from bazaar.gateway.config import PolicyConfig
from bazaar.shared.testing.infrastructure import Resolved
from bazaar.shared.testing.tokens import TokenIssuer

WINDOW = 3600
POLICY_ITEM = re.compile(r'"([A-Za-z0-9_.-]+)";q=(\d+);w=(\d+)')
STATE_ITEM = re.compile(r'"([A-Za-z0-9_.-]+)";r=(\d+);t=(\d+)')


def policies(*, user: int = 1000, anonymous: int = 1000, token: int = 1000) -> dict:
    """Rate-limit settings with small quotas and a long window."""
    return {
        "user": PolicyConfig(quota=user, window=WINDOW),
        "anonymous": PolicyConfig(quota=anonymous, window=WINDOW),
        "token": PolicyConfig(quota=token, window=WINDOW),
    }


async def clear_of_window_edge(window: int = WINDOW, margin: float = 3.0) -> None:
    """Wait out the end of the current fixed window if it is close (no straddling)."""
    left = window - time.time() % window
    if left < margin:
        await asyncio.sleep(left + 0.1)


def parse_policies(value: str) -> dict[str, tuple[int, int]]:
    items = [item.strip() for item in value.split(",")]
    parsed = {}
    for item in items:
        match = POLICY_ITEM.fullmatch(item)
        assert match, value
        parsed[match[1]] = (int(match[2]), int(match[3]))
    return parsed


def parse_state(value: str) -> dict[str, tuple[int, int]]:
    items = [item.strip() for item in value.split(",")]
    parsed = {}
    for item in items:
        match = STATE_ITEM.fullmatch(item)
        assert match, value
        parsed[match[1]] = (int(match[2]), int(match[3]))
    return parsed


def assert_rate_limit_headers(response: aiohttp.ClientResponse) -> dict[str, tuple[int, int]]:
    """Assert well-formed RateLimit-Policy/RateLimit headers; return the state by policy."""
    assert "RateLimit-Policy" in response.headers, dict(response.headers)
    assert "RateLimit" in response.headers, dict(response.headers)
    declared = parse_policies(response.headers["RateLimit-Policy"])
    state = parse_state(response.headers["RateLimit"])
    assert declared.keys() == state.keys()
    for name, (remaining, reset) in state.items():
        quota, window = declared[name]
        assert 0 <= remaining <= quota
        assert 1 <= reset <= window
    return state


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _from(address: str) -> aiohttp.TCPConnector:
    """A connector whose connections come from another loopback address."""
    return aiohttp.TCPConnector(local_addr=(address, 0), force_close=True)


# -- headers --------------------------------------------------------------------------------


async def test_the_default_policies_are_those_of_api_md(
    fakes, gateways, token_issuer: TokenIssuer
) -> None:
    catalog, auth = await fakes.upstream("catalog"), await fakes.upstream("auth")
    client = await gateways.start({"catalog": catalog, "auth": auth})
    anonymous = await client.get("/v1/products")
    assert anonymous.status == 200
    assert parse_policies(anonymous.headers["RateLimit-Policy"]) == {"anonymous": (1200, 60)}
    user = await client.get("/v1/products", headers=_bearer(token_issuer.issue("dflt")))
    assert parse_policies(user.headers["RateLimit-Policy"]) == {"user": (1200, 60)}
    login = await client.post(
        "/v1/auth/token", data={"grant_type": "password", "username": "a@b.c", "password": "p"}
    )
    assert parse_policies(login.headers["RateLimit-Policy"]) == {
        "anonymous": (1200, 60),
        "token": (20, 60),
    }


async def test_the_remaining_quota_counts_down_request_by_request(fakes, gateways) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog}, rate_limits=policies(anonymous=50))
    await clear_of_window_edge()
    remaining = []
    for _ in range(3):
        response = await client.get("/v1/products")
        remaining.append(assert_rate_limit_headers(response)["anonymous"][0])
    assert remaining == [49, 48, 47]


ANSWERS = {
    "proxied": ("GET", "/v1/products", {}),
    "proxied-with-a-token": ("GET", "/v1/orders", "token"),
    "relayed-upstream-500": ("GET", "/v1/products/broken", {}),
    "not-routed-404": ("GET", "/v1/nowhere", {}),
    "internal-404": ("POST", "/v1/reservations", {}),
    "missing-token-401": ("GET", "/v1/orders", {}),
    "invalid-token-401": ("GET", "/v1/orders", {"Authorization": "Bearer not.a.jwt"}),
    "forbidden-403": ("GET", "/v1/users", "token"),
    "too-large-413": ("POST", "/v1/products", "large"),
    "bad-gateway-502": ("POST", "/v1/auth/token", {}),
}


@pytest.mark.parametrize("kind", list(ANSWERS))
async def test_every_answer_carries_ratelimit_policy_and_ratelimit_headers(
    fakes, gateways, token_issuer: TokenIssuer, kind: str
) -> None:
    async def catalog_behaviour(request: web.Request, _body: bytes) -> web.StreamResponse:
        if request.path.endswith("/broken"):
            return web.Response(status=500, text="broken")
        return web.json_response({})

    catalog = await fakes.upstream("catalog", catalog_behaviour)
    orders = await fakes.upstream("orders")
    client = await gateways.start({"catalog": catalog, "orders": orders}, max_body_bytes=4096)
    method, path, extra = ANSWERS[kind]
    headers: dict[str, str] = {}
    data = None
    if extra == "token":
        headers = _bearer(token_issuer.issue("rl-every", ("orders:read",)))
    elif extra == "large":
        data = b"x" * 5000
    else:
        headers = dict(extra)
    response = await client.request(method, path, headers=headers, data=data)
    await response.read()
    assert response.status in {200, 401, 403, 404, 413, 500, 502}
    assert_rate_limit_headers(response)


async def test_a_429_carries_the_headers_a_problem_and_retry_after(fakes, gateways, expect) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog}, rate_limits=policies(anonymous=1))
    await clear_of_window_edge()
    assert (await client.get("/v1/products")).status == 200
    response = await client.get("/v1/products")
    await expect.problem(response, 429, "rate-limited")
    state = assert_rate_limit_headers(response)
    assert state["anonymous"][0] == 0
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit()
    assert 1 <= int(retry_after) <= WINDOW
    assert catalog.hits == 1


# -- exactness on one node --------------------------------------------------------------------


async def test_exactly_the_user_quota_of_concurrent_requests_passes_on_one_node(
    fakes, gateways, token_issuer: TokenIssuer, expect
) -> None:
    orders = await fakes.upstream("orders")
    client = await gateways.start({"orders": orders}, rate_limits=policies(user=5))
    token = token_issuer.issue("rl-exact")
    await clear_of_window_edge()
    answers = await asyncio.gather(
        *(client.get("/v1/orders", headers=_bearer(token)) for _ in range(12))
    )
    passed = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status != 200]
    assert len(passed) == 5
    assert sorted(assert_rate_limit_headers(a)["user"][0] for a in passed) == [0, 1, 2, 3, 4]
    for answer in refused:
        await expect.problem(answer, 429, "rate-limited")
        assert int(answer.headers["Retry-After"]) >= 1
    assert orders.hits == 5


async def test_the_user_policy_counts_per_subject_across_tokens_and_addresses(
    fakes, gateways, token_issuer: TokenIssuer
) -> None:
    orders = await fakes.upstream("orders")
    client = await gateways.start({"orders": orders}, rate_limits=policies(user=2))
    first, second = token_issuer.issue("rl-same-sub"), token_issuer.issue("rl-same-sub")
    assert first != second  # two sessions of one user
    await clear_of_window_edge()
    assert (await client.get("/v1/orders", headers=_bearer(first))).status == 200
    async with aiohttp.ClientSession(connector=_from("127.0.0.2")) as elsewhere:
        url = client.make_url("/v1/orders")
        assert (await elsewhere.get(url, headers=_bearer(second))).status == 200
        assert (await elsewhere.get(url, headers=_bearer(second))).status == 429
    # Another user is counted apart.
    other = await client.get("/v1/orders", headers=_bearer(token_issuer.issue("rl-other-sub")))
    assert other.status == 200


async def test_anonymous_requests_are_counted_per_client_address(
    fakes, gateways, token_issuer: TokenIssuer
) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog}, rate_limits=policies(anonymous=3))
    await clear_of_window_edge()
    statuses = [(await client.get("/v1/products")).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    async with aiohttp.ClientSession(connector=_from("127.0.0.2")) as other:
        response = await other.get(client.make_url("/v1/products"))
        assert response.status == 200
        assert assert_rate_limit_headers(response)["anonymous"][0] == 2
    # A signed-in user from the exhausted address counts against their own policy.
    user = await client.get("/v1/products", headers=_bearer(token_issuer.issue("rl-addr")))
    assert user.status == 200


async def test_a_spoofed_x_forwarded_for_from_an_untrusted_peer_does_not_reset_the_count(
    fakes, gateways, expect
) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog}, rate_limits=policies(anonymous=3))
    await clear_of_window_edge()
    statuses = []
    for i in range(6):
        response = await client.get(
            "/v1/products", headers={"X-Forwarded-For": f"203.0.113.{i}, 198.51.100.{i}"}
        )
        statuses.append(response.status)
    assert statuses == [200, 200, 200, 429, 429, 429]
    assert [seen.headers["X-Forwarded-For"] for seen in catalog.seen] == ["127.0.0.1"] * 3


async def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(fakes, gateways) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start(
        {"catalog": catalog}, rate_limits=policies(anonymous=2), trusted_proxies=("127.0.0.1",)
    )
    await clear_of_window_edge()

    async def get(forwarded: str) -> int:
        response = await client.get("/v1/products", headers={"X-Forwarded-For": forwarded})
        return response.status

    assert [await get("198.51.100.7") for _ in range(3)] == [200, 200, 429]
    assert await get("198.51.100.8") == 200
    # The client can prepend what it likes; the proxy's own entry (rightmost) decides.
    assert await get("10.9.9.9, 198.51.100.7") == 429
    assert catalog.seen[-1].headers["X-Forwarded-For"] == "198.51.100.8, 127.0.0.1"


async def test_x_forwarded_for_is_ignored_from_a_peer_that_is_not_a_trusted_proxy(
    fakes, gateways
) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start(
        {"catalog": catalog}, rate_limits=policies(anonymous=2), trusted_proxies=("127.0.0.1/32",)
    )
    await clear_of_window_edge()
    statuses = []
    async with aiohttp.ClientSession(connector=_from("127.0.0.2")) as untrusted:
        for i in range(3):
            response = await untrusted.get(
                client.make_url("/v1/products"), headers={"X-Forwarded-For": f"198.51.100.{i}"}
            )
            statuses.append(response.status)
    assert statuses == [200, 200, 429]
    assert [s.headers["X-Forwarded-For"] for s in catalog.seen] == ["127.0.0.2"] * 2


async def test_requests_with_invalid_tokens_still_count_against_the_clients_address(
    fakes, gateways, token_issuer: TokenIssuer
) -> None:
    orders = await fakes.upstream("orders")
    client = await gateways.start({"orders": orders}, rate_limits=policies(anonymous=3))
    await clear_of_window_edge()
    statuses = []
    for i in range(6):
        forged = token_issuer.by_stranger(subject=f"guess-{i}")
        response = await client.get("/v1/orders", headers=_bearer(forged))
        statuses.append(response.status)
    # Guessing tokens is as limited as anything else an anonymous client does.
    assert statuses == [401, 401, 401, 429, 429, 429]


# -- the token endpoint -----------------------------------------------------------------------


@pytest.fixture
async def token_endpoint(fakes, gateways):
    """A gateway whose "token" policy allows 3 attempts, in front of an echo auth."""
    auth = await fakes.upstream("auth")
    client = await gateways.start({"auth": auth}, rate_limits=policies(token=3, anonymous=100))
    await clear_of_window_edge()
    return client, auth


async def test_password_grants_count_per_address_and_username(token_endpoint, expect) -> None:
    client, auth = token_endpoint

    async def login(username: str, session=None) -> aiohttp.ClientResponse:
        form = {"grant_type": "password", "username": username, "password": "guess"}
        if session is None:
            return await client.post("/v1/auth/token", data=form)
        return await session.post(client.make_url("/v1/auth/token"), data=form)

    statuses = [(await login("alice@bazaar.test")).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    refused = await login("alice@bazaar.test")
    await expect.problem(refused, 429, "rate-limited")
    assert "token" in parse_policies(refused.headers["RateLimit-Policy"])
    assert int(refused.headers["Retry-After"]) >= 1
    # The same account spelled differently is the same account.
    assert (await login(" Alice@Bazaar.TEST ")).status == 429
    # Another account from the same address is not affected.
    assert (await login("bob@bazaar.test")).status == 200
    # The same account from another address has its own count.
    async with aiohttp.ClientSession(connector=_from("127.0.0.2")) as other:
        assert (await login("alice@bazaar.test", other)).status == 200
    assert auth.hits == 5


async def test_refresh_grants_count_only_against_the_address_policy(token_endpoint) -> None:
    client, auth = token_endpoint
    for i in range(6):
        response = await client.post(
            "/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": f"r{i}"}
        )
        assert response.status == 200
        assert parse_policies(response.headers["RateLimit-Policy"]).keys() == {"anonymous"}
    assert auth.hits == 6


async def test_client_credentials_in_the_form_count_per_client_id(token_endpoint) -> None:
    client, _ = token_endpoint

    async def grant(client_id: str) -> int:
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": "x"}
        return (await client.post("/v1/auth/token", data=form)).status

    assert [await grant("orders") for _ in range(4)] == [200, 200, 200, 429]
    assert await grant("catalog") == 200


async def test_client_credentials_with_http_basic_count_per_client_id(token_endpoint) -> None:
    client, _ = token_endpoint

    async def grant(client_id: str) -> aiohttp.ClientResponse:
        basic = base64.b64encode(f"{client_id}:guess".encode()).decode()
        return await client.post(
            "/v1/auth/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {basic}"},
        )

    # RFC 6749 §2.3.1: HTTP Basic is how clients authenticate; guessing a client's secret
    # that way is counted against the "token" policy just like with the form.
    answers = [await grant("orders") for _ in range(4)]
    assert [a.status for a in answers] == [200, 200, 200, 429]
    assert "token" in parse_policies(answers[0].headers["RateLimit-Policy"])


async def test_a_form_client_id_does_not_hide_the_basic_client_that_auth_checks(
    token_endpoint,
) -> None:
    client, auth = token_endpoint
    basic = base64.b64encode(b"orders:guess").decode()

    async def grant(i: int) -> int:
        # auth authenticates the Basic header and ignores the form's client_id: a new
        # client_id per attempt must not buy a new count for the same secret guessing.
        response = await client.post(
            "/v1/auth/token",
            data={"grant_type": "client_credentials", "client_id": f"decoy-{i}"},
            headers={"Authorization": f"Basic {basic}"},
        )
        return response.status

    assert [await grant(i) for i in range(5)] == [200, 200, 200, 429, 429]
    assert auth.hits == 3


async def test_a_body_that_is_not_utf8_counts_against_the_account_it_names(
    token_endpoint,
) -> None:
    client, auth = token_endpoint

    async def login(password: bytes) -> int:
        # auth reads the form's raw bytes as Latin-1: this is a login as alice.
        body = b"grant_type=password&username=alice%40bazaar.test&password=" + password
        response = await client.post(
            "/v1/auth/token",
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        return response.status

    statuses = [await login(b"guess-\xff"), await login(b"\xfe\xfd"), await login(b"ok")]
    assert statuses == [200, 200, 200]
    assert await login(b"\xff-again") == 429
    assert auth.hits == 3


async def test_a_basic_header_the_connection_header_drops_cannot_buy_fresh_token_counts(
    token_endpoint, expect
) -> None:
    client, auth = token_endpoint

    async def grant(i: int) -> aiohttp.ClientResponse:
        # `Connection: Authorization` would have the header dropped as hop-by-hop: auth
        # would authenticate the form's victim while a decoy client was counted.
        decoy = base64.b64encode(f"decoy{i}:x".encode()).decode()
        return await client.post(
            "/v1/auth/token",
            data=f"grant_type=client_credentials&client_id=victim&client_secret=guess{i}",
            headers={
                "Authorization": f"Basic {decoy}",
                "Connection": "Authorization, close",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )

    for i in range(5):
        await expect.problem(await grant(i), 400, "bad-request")
    assert auth.hits == 0


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe\x00garbage",
        b"username=alice%40bazaar.test&password=guess",
        b"grant_type=password&grant_type=refresh_token&username=a&password=b",
        b"grant_type=password&username=a&username=b&password=c",
        b"grant_type=client_credentials&client_secret=guess",
    ],
    ids=["empty", "binary", "no-grant", "two-grants", "two-usernames", "no-client-id"],
)
async def test_a_malformed_token_request_still_counts_against_the_token_policy(
    token_endpoint, body: bytes
) -> None:
    client, auth = token_endpoint
    statuses = []
    for _ in range(4):
        response = await client.post(
            "/v1/auth/token",
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert "token" in parse_policies(response.headers["RateLimit-Policy"])
        statuses.append(response.status)
    assert statuses == [200, 200, 200, 429]
    assert auth.hits == 3


# -- Redis shared by two gateways -------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def shared_subject(
    redis_server: Resolved, redis_client: redis.asyncio.Redis
) -> AsyncIterator[str]:
    """A token subject of this test alone; its gateway counters are deleted afterwards."""
    subject = f"rl-shared-{uuid.uuid4().hex}"
    yield subject
    keys = [k async for k in redis_client.scan_iter(match=f"*{subject}*")]
    if keys:
        await redis_client.delete(*keys)


async def test_two_gateways_sharing_redis_never_overshoot_together(
    fakes,
    gateways,
    token_issuer: TokenIssuer,
    redis_server: Resolved,
    redis_client: redis.asyncio.Redis,
    redis_prefix: str,
    shared_subject: str,
    expect,
) -> None:
    orders = await fakes.upstream("orders")
    prefix = (
        f"{redis_prefix}{uuid.uuid4().hex[:8]}:"  # the run's keys, as deployed replicas share one
    )
    replicas = [
        await gateways.start(
            {"orders": orders},
            rate_limits=policies(user=10),
            redis_url=redis_server.url,
            redis_prefix=prefix,
            redis_timeout_seconds=2.0,
        )
        for _ in range(2)
    ]
    token = token_issuer.issue(shared_subject)
    await clear_of_window_edge()
    answers = await asyncio.gather(
        *(replicas[i % 2].get("/v1/orders", headers=_bearer(token)) for i in range(30))
    )
    statuses = [a.status for a in answers]
    assert statuses.count(200) == 10, statuses
    assert statuses.count(429) == 20
    assert orders.hits == 10
    for replica in (0, 1):  # both replicas refused some: the count really is shared
        assert 429 in statuses[replica::2]
    counted = [k async for k in redis_client.scan_iter(match=f"{prefix}*")]
    assert any(shared_subject.encode() in k for k in counted)
    for replica in replicas:  # every decision came from Redis, none from a fallback
        metrics = await expect.metrics(replica)
        assert metrics.value("gateway_rate_limit_fallbacks_total") == 0


async def test_with_redis_down_requests_are_still_served_limited_in_process_and_counted(
    fakes, gateways, expect
) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start(
        {"catalog": catalog},
        rate_limits=policies(anonymous=3),
        redis_url=f"redis://127.0.0.1:{fakes.closed_url().rsplit(':', 1)[1]}/0",
    )
    await clear_of_window_edge()
    statuses = [(await client.get("/v1/products")).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    metrics = await expect.metrics(client)
    assert metrics.value("gateway_rate_limit_fallbacks_total") > 0


async def test_with_redis_down_a_flood_of_requests_logs_one_fallback_warning(
    fakes, gateways, expect, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start(
        {"catalog": catalog},
        redis_url=f"redis://127.0.0.1:{fakes.closed_url().rsplit(':', 1)[1]}/0",
    )
    with caplog.at_level(logging.WARNING, logger="bazaar.gateway"):
        for _ in range(50):
            assert (await client.get("/v1/products")).status == 200
    fallbacks = [r for r in caplog.records if "rate limiting in-process" in r.getMessage()]
    assert len(fallbacks) == 1, [r.getMessage() for r in fallbacks]
    metrics = await expect.metrics(client)
    assert metrics.value("gateway_rate_limit_fallbacks_total") >= 50


async def test_a_burst_through_a_gateway_with_a_small_redis_pool_counts_every_request_in_redis(
    fakes,
    gateways,
    redis_server: Resolved,
    redis_client: redis.asyncio.Redis,
    redis_prefix: str,
    expect,
) -> None:
    catalog = await fakes.upstream("catalog")
    prefix = f"{redis_prefix}{uuid.uuid4().hex[:8]}:"
    client = await gateways.start(
        {"catalog": catalog},
        rate_limits=policies(anonymous=100_000),
        redis_url=redis_server.url,
        redis_prefix=prefix,
        redis_max_connections=4,
        # What is tested is the pool's size, not the decision's latency: the burst's client
        # shares the gateway's loop, and on a busy machine its first decision (a new
        # connection) took longer than the default 250 ms, which sent the burst in-process.
        redis_timeout_seconds=2.0,
    )
    await clear_of_window_edge()
    burst = 256
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> int:
            async with session.get(client.make_url("/v1/products")) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(one() for _ in range(burst)))
    assert statuses == [200] * burst
    metrics = await expect.metrics(client)
    assert metrics.value("gateway_rate_limit_fallbacks_total") == 0
    counters = [name async for name in redis_client.scan_iter(match=f"{prefix}*")]
    assert sum([int(await redis_client.get(name)) for name in counters]) == burst
