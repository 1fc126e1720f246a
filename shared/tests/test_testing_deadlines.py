"""The test toolkit never waits for ever: each wait ends, and fails saying what it waited for."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from bazaar.shared.testing import server
from bazaar.shared.testing.postgres import DatabaseFactory, execute_within
from bazaar.shared.testing.processes import communicate, join, kill, read_lines_until
from bazaar.shared.testing.server import serve_on_socket


def child(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


# --- processes ----------------------------------------------------------------------------


def test_reading_up_to_a_line_leaves_what_follows_for_communicate() -> None:
    with child("print('one'); print('two'); print('three')") as proc:
        try:
            assert read_lines_until(proc, lambda line: line == "two", 30, "two") == ["one", "two"]
            out, _ = communicate(proc, 30, "the child to end")
        finally:
            kill(proc)
    assert out == b"three\n"


def test_a_line_that_never_comes_fails_in_time_with_the_output_so_far() -> None:
    began = time.monotonic()
    with child("import time; print('started', flush=True); time.sleep(60)") as proc:
        try:
            with pytest.raises(AssertionError) as failed:
                read_lines_until(proc, lambda line: line == "ready", 1, "the child to be ready")
        finally:
            kill(proc)
    assert time.monotonic() - began < 10
    message = str(failed.value)
    assert message.startswith("the child to be ready: not within 1 s (it still runs)")
    assert "started" in message


def test_output_that_ends_before_the_line_fails_at_once_with_its_stderr() -> None:
    with (
        child("import sys; print('only'); print('boom', file=sys.stderr)") as proc,
        pytest.raises(AssertionError) as failed,
    ):
        read_lines_until(proc, lambda line: line == "ready", 30, "the child to be ready")
    message = str(failed.value)
    assert "its output ended first (it exited with 0)" in message
    assert "only" in message and "boom" in message


def test_a_process_that_outstays_communicate_is_killed_and_its_output_quoted() -> None:
    with (
        child("import sys, time; print('working', flush=True); time.sleep(60)") as proc,
        pytest.raises(AssertionError) as failed,
    ):
        communicate(proc, 1, "the child to end")
    assert proc.poll() is not None, "killed"
    message = str(failed.value)
    assert message.startswith("the child to end: the process was still running after 1 s")
    assert "working" in message


def test_a_thread_that_does_not_end_in_time_fails_the_join() -> None:
    release = threading.Event()
    thread = threading.Thread(target=release.wait, name="stuck")
    thread.start()
    try:
        with pytest.raises(AssertionError, match="the worker: thread stuck still running"):
            join(thread, 0.2, "the worker")
    finally:
        release.set()
        join(thread, 30, "the worker")


# --- PostgreSQL ---------------------------------------------------------------------------


async def test_a_statement_blocked_by_a_lock_fails_naming_the_session_that_holds_it(
    database_factory: DatabaseFactory,
) -> None:
    url = await database_factory.create("deadlines", ddl=["CREATE TABLE note (id int)"])
    holder, blocked = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE note")
            with pytest.raises(TimeoutError) as failed:
                await execute_within(blocked, "TRUNCATE note", url, seconds=1)
        await execute_within(blocked, "TRUNCATE note", url)  # usable again
    finally:
        await holder.close()
        await blocked.close()
    assert "'TRUNCATE note' did not finish within 1 s" in str(failed.value)
    assert "'query': 'LOCK TABLE note'" in str(failed.value)  # who holds the lock


# --- serve_on_socket ----------------------------------------------------------------------


def endless_app(*, shutdown_hangs: bool = False) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if shutdown_hangs:
            await asyncio.Event().wait()

    app = FastAPI(lifespan=lifespan)

    @app.get("/endless")
    async def endless(request: Request) -> StreamingResponse:
        async def ticks() -> AsyncIterator[bytes]:
            while True:  # heeds neither the stop notice nor the client
                yield b"tick\n"
                await asyncio.sleep(0.05)

        return StreamingResponse(ticks(), media_type="text/plain")

    return app


async def test_a_stream_left_open_is_cut_after_the_grace_instead_of_holding_the_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server, "SHUTDOWN_GRACE_SECONDS", 1)
    async with httpx.AsyncClient(timeout=10) as client:
        began = 0.0
        async with serve_on_socket(endless_app()) as url:
            stream = client.stream("GET", f"{url}/endless")
            response = await stream.__aenter__()
            assert response.status_code == 200
            began = time.monotonic()
        stopped = time.monotonic() - began
        await stream.__aexit__(None, None, None)
    assert stopped < 10, stopped


async def test_an_app_whose_shutdown_hangs_fails_the_stop_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server, "STOP_SECONDS", 1)
    began = time.monotonic()
    with pytest.raises(TimeoutError, match=r"did not stop within 1 s"):
        async with serve_on_socket(endless_app(shutdown_hangs=True)):
            pass
    assert time.monotonic() - began < 10
