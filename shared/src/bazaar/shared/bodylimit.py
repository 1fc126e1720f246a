"""Refuse oversized request bodies (413) before a handler reads them whole.

The pieces the service middleware (`bazaar.shared.middleware`) applies on every request.
"""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from bazaar.shared.errors import error_response
from bazaar.shared.problem import PayloadTooLarge


def too_large(max_bytes: int) -> PayloadTooLarge:
    """The error of a body over `max_bytes`."""
    return PayloadTooLarge(f"The request body exceeds {max_bytes} bytes.")


def declared_too_large(content_length: bytes | None, max_bytes: int) -> bool:
    """Whether a `Content-Length` (if sent) is malformed or announces more than `max_bytes`."""
    return content_length is not None and (
        not content_length.isdigit() or int(content_length) > max_bytes
    )


def limited(receive: Receive, max_bytes: int) -> Receive:
    """`receive`, raising `PayloadTooLarge` once the bytes streamed exceed `max_bytes`."""
    received = 0

    async def limited_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                # FastAPI wraps this in its own 400; the problem handler unwraps it.
                raise too_large(max_bytes)
        return message

    return limited_receive


async def refuse(scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
    """Answer 413 `payload-too-large` and close the connection (the body is left unread)."""
    response = error_response(too_large(max_bytes), scope)
    response.headers["Connection"] = "close"
    await response(scope, receive, send)
