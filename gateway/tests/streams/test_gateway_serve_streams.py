"""`bazaar-gateway serve` on SIGTERM with event streams open: each stream ends cleanly (the
client reads its end, not a reset) and the process exits well within its grace."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import aiohttp

from bazaar.shared.testing.server import free_port
from bazaar.shared.testing.tokens import JwksServer, TokenIssuer

from .conftest import EVENT_STREAM, KEEP_ALIVE, SseUpstream, event

GRACE = 15


async def _listening(port: int, process: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(30):
        while True:
            assert process.returncode is None, await process.communicate()
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return


async def test_sigterm_ends_open_streams_cleanly_and_the_gateway_exits_within_its_grace(
    fakes, jwks_server: JwksServer, token_issuer: TokenIssuer, tmp_path: Path
) -> None:
    upstream = SseUpstream(keepalive=0.5)
    orders = await fakes.upstream("orders", upstream)
    closed = fakes.closed_url()
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_ENVIRONMENT": "test",
        "GATEWAY_SHUTDOWN_TIMEOUT": str(GRACE),
        "GATEWAY_JWT_JWKS_URL": jwks_server.url,
        "GATEWAY_JWT_ISSUER": TokenIssuer.ISSUER,
        "GATEWAY_JWT_AUDIENCE": TokenIssuer.AUDIENCE,
        "GATEWAY_UPSTREAMS": json.dumps(
            {"auth": {"url": closed}, "catalog": {"url": closed}, "orders": {"url": orders.url}}
        ),
    }
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bazaar.gateway.cli", "serve"),
        env=env,
        cwd=tmp_path,  # no .env file
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await _listening(port, process)
        headers = {
            "Authorization": f"Bearer {token_issuer.issue('alice')}",
            "Accept": EVENT_STREAM,
        }
        url = f"http://127.0.0.1:{port}/v1/orders/{uuid.uuid4()}/events"
        async with aiohttp.ClientSession() as session:
            streams = [await session.get(url, headers=headers) for _ in range(2)]
            assert [s.status for s in streams] == [200, 200]
            for feed in await upstream.wait_open(2):
                feed.queue.put_nowait(event(7))
            for response in streams:
                async with asyncio.timeout(5):
                    assert await response.content.readuntil(b"\n\n") == event(7)
            signalled = time.perf_counter()
            process.send_signal(signal.SIGTERM)
            for response in streams:
                async with asyncio.timeout(5):
                    rest = await response.content.read()  # ClientPayloadError if cut or reset
                assert rest.replace(KEEP_ALIVE, b"") == b""
        async with asyncio.timeout(GRACE + 15):
            _, stderr = await process.communicate()
        exited = time.perf_counter() - signalled
        assert process.returncode == 0, stderr
        assert b"Traceback" not in stderr, stderr
        assert exited < 3.0, exited  # the streams did not hold it for the 15 s grace
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
