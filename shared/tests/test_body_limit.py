"""Every service refuses oversized bodies with 413 before reading them whole."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
from fastapi import FastAPI, Request
from pydantic import BaseModel

from bazaar.shared.errors import install_problem_handlers
from bazaar.shared.metrics import HttpMetrics
from bazaar.shared.middleware import ServiceMiddleware

LIMIT = 2048


class Note(BaseModel):
    text: str


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_problem_handlers(app, {})
    app.add_middleware(ServiceMiddleware, metrics=HttpMetrics("test"), max_bytes=LIMIT)
    seen: list[int] = []
    app.state.seen = seen

    @app.post("/notes")
    async def create(note: Note) -> dict[str, int]:
        seen.append(len(note.text))
        return {"length": len(note.text)}

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"length": len(await request.body())}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        c.app = app  # type: ignore[attr-defined]
        yield c


def _assert_413(response: httpx.Response) -> None:
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/payload-too-large")


async def test_a_body_within_the_limit_is_served(client: httpx.AsyncClient) -> None:
    response = await client.post("/notes", json={"text": "x" * 100})
    assert response.status_code == 200 and response.json() == {"length": 100}


async def test_a_declared_content_length_over_the_limit_is_refused_unread(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/notes", json={"text": "x" * (LIMIT + 1)})
    _assert_413(response)
    assert client.app.state.seen == []  # type: ignore[attr-defined]


async def test_a_streamed_body_without_length_is_cut_off_at_the_limit(
    client: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(10):
            yield b"y" * 1024
        yield b'"}'

    for path in ("/notes", "/raw"):
        response = await client.post(
            path, content=chunks(), headers={"content-type": "application/json"}
        )
        _assert_413(response)
    assert client.app.state.seen == []  # type: ignore[attr-defined]


async def test_a_malformed_content_length_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/raw", content=b"{}", headers={"content-length": "abc"})
    _assert_413(response)
