"""Refuse oversized request bodies (413) before a handler reads them whole."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bazaar.shared.errors import problem_response
from bazaar.shared.problem import PayloadTooLarge, Problem


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body exceeds {max_bytes} bytes.")


class BodyLimitMiddleware:
    """Answers 413 when Content-Length, or the bytes actually streamed, exceed `max_bytes`."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request unless its body is too large."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await self._refuse(scope, receive, send)
                    return
                break
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI wraps this in its own 400; the problem handler unwraps it.
                    raise _too_large(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except PayloadTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        exc = _too_large(self.max_bytes)
        problem = Problem(exc.status, exc.slug, exc.title, exc.detail)
        response = problem_response(problem, instance=scope["path"])
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
