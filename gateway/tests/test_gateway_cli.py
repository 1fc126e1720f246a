"""`bazaar-gateway serve` itself: run_app's keep-alive timeout, the edge, a clean SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from bazaar.gateway.cli import cancel_leftovers
from bazaar.shared.testing.server import free_port


async def _wait_listening(port: int, process: asyncio.subprocess.Process) -> None:
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


async def test_serve_closes_connections_without_a_complete_head_after_its_keepalive_timeout(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_KEEPALIVE_TIMEOUT": "1",
        "GATEWAY_ENVIRONMENT": "test",
    }
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bazaar.gateway.cli", "serve"),
        env=env,
        cwd=tmp_path,  # no .env file
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await _wait_listening(port, process)
        silent = await asyncio.open_connection("127.0.0.1", port)
        partial = await asyncio.open_connection("127.0.0.1", port)
        partial[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        bad = await asyncio.open_connection("127.0.0.1", port)
        bad[1].write(b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n")
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(10):
                assert await silent[0].read() == b""
                assert await partial[0].read() == b""
                answer = await bad[0].read()
        finally:
            for _, writer in (silent, partial, bad):
                writer.close()
        assert asyncio.get_running_loop().time() - started < 5
        assert re.match(rb"HTTP/1\.[01] 400 ", answer) and b"application/problem+json" in answer
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, stderr = await process.communicate()
        assert process.returncode == 0, stderr
        assert b"Traceback" not in stderr, stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()


def test_a_task_failing_while_cancelled_at_shutdown_is_reported_not_dropped() -> None:
    loop = asyncio.new_event_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    async def quiet() -> None:
        await asyncio.sleep(3600)

    try:
        tasks = [loop.create_task(stubborn()), loop.create_task(quiet())]
        loop.run_until_complete(asyncio.sleep(0))
        cancel_leftovers(loop)
    finally:
        loop.close()
    assert all(task.done() for task in tasks)
    assert [type(c["exception"]) for c in reported] == [RuntimeError]
    assert "shutdown" in reported[0]["message"]
