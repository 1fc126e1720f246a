"""Per-run Redis key prefixes: every key a test run writes is deleted when the run ends.

`redis` is imported inside the functions: a package whose tests never ask for Redis does
not need the client installed to load the plugin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from bazaar.shared.testing.infrastructure import Resolved, resolve

if TYPE_CHECKING:
    import redis.asyncio

LOCAL_REDIS = "redis://127.0.0.1:6379/0"
#: The toolkit's clients wait this long at most for a connection or an answer (redis-py
#: waits for ever by default), then raise redis' TimeoutError.
CONNECT_SECONDS = 10.0
ANSWER_SECONDS = 60.0


#: The image a run starts when no Redis answers (testcontainers fallback).
REDIS_IMAGE = "redis:7-alpine"


def _start_redis_container() -> tuple[str, AbstractContextManager[object]]:
    from testcontainers.community.redis import RedisContainer

    container = RedisContainer(REDIS_IMAGE)
    container.__enter__()
    host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
    return f"redis://{host}:{port}/0", container


def resolve_redis() -> Resolved:
    """The Redis server of this run (see `resolve`)."""
    return resolve(
        env_var="BAZAAR_TEST_REDIS_URL",
        local_default=LOCAL_REDIS,
        start_container=_start_redis_container,
        what="Redis",
    )


async def delete_prefixed(url: str, prefix: str) -> int:
    """Delete every key under `prefix` (SCAN, then DEL in batches); return how many."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(
        url, socket_connect_timeout=CONNECT_SECONDS, socket_timeout=ANSWER_SECONDS
    )
    deleted = 0
    try:
        batch: list[bytes] = []
        async for name in client.scan_iter(match=_glob_escape(prefix) + "*", count=1000):
            batch.append(name)
            if len(batch) >= 1000:
                deleted += await client.delete(*batch)
                batch.clear()
        if batch:
            deleted += await client.delete(*batch)
    finally:
        await client.aclose()
    return deleted


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Resolved]:
    """The Redis server of this run: $BAZAAR_TEST_REDIS_URL, local, or a container."""
    resolved = resolve_redis()
    yield resolved
    resolved.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def redis_prefix(redis_server: Resolved, test_run_id: str) -> AsyncIterator[str]:
    """A key prefix unique to this run; every key under it is deleted when the run ends."""
    prefix = f"bazaar-test:{test_run_id}:"
    yield prefix
    await delete_prefixed(redis_server.url, prefix)


@pytest_asyncio.fixture(loop_scope="session")
async def redis_client(redis_server: Resolved) -> AsyncIterator[redis.asyncio.Redis]:
    """A Redis client for one test, closed afterwards."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(
        redis_server.url, socket_connect_timeout=CONNECT_SECONDS, socket_timeout=ANSWER_SECONDS
    )
    yield client
    await client.aclose()
