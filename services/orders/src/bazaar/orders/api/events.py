"""The order status stream: one order's state, then each change, as Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.sse import EventSourceResponse, format_sse_event
from starlette.types import Receive, Scope, Send

from bazaar.orders.api.deps import Reader, viewer_of
from bazaar.orders.api.schemas import OrderRead
from bazaar.orders.service.watch import OrderStream, OrderStreams
from bazaar.shared.openapi import problem_responses

router = APIRouter(prefix="/v1/orders", tags=["orders"])

#: Neither a browser nor a shared cache keeps a stream; proxies pass it on unbuffered.
STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
KEEP_ALIVE = format_sse_event(comment="keep-alive")
#: Cursors are positive bigints: at most 19 digits.
_CURSOR_DIGITS = 19

_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The order now, then each change, as `order` events; `: keep-alive` "
        "comments while nothing changes. Ends after a final state.",
        "content": {
            "text/event-stream": {
                "itemSchema": {
                    "type": "object",
                    "required": ["event", "id", "data"],
                    "properties": {
                        "event": {"const": "order"},
                        "id": {"type": "string", "description": "Cursor for Last-Event-ID."},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {"$ref": "#/components/schemas/OrderRead"},
                        },
                    },
                }
            }
        },
    },
    204: {"description": "`Last-Event-ID` names the order's final state: nothing more comes."},
}


async def order_streams(request: Request) -> OrderStreams:
    """The stream opener of this process."""
    streams: OrderStreams = request.app.state.order_streams
    return streams


Streams = Annotated[OrderStreams, Depends(order_streams)]


class OrderEventResponse(EventSourceResponse):
    """Each event framed and sent as it comes; the order is unwatched however the answer ends."""

    def __init__(self, stream: OrderStream) -> None:
        super().__init__(_frames(stream), headers=STREAM_HEADERS)
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Also when the client left before the stream began (its generator never ran).
            self._stream.close()


async def _frames(stream: OrderStream) -> AsyncIterator[bytes]:
    async for event in stream.events():
        if event is None:
            yield KEEP_ALIVE
        else:
            data = OrderRead.of(event.order).model_dump_json()
            yield format_sse_event(event="order", id=str(event.version), data_str=data)


def _cursor(last_event_id: str | None) -> int | None:
    """The cursor a client last got; an id that is not one of ours counts as none."""
    if last_event_id is None:
        return None
    value = last_event_id.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= _CURSOR_DIGITS):
        return None
    return int(value)


@router.get(
    "/{order_id}/events",
    response_class=Response,
    responses={**_STREAM_RESPONSES, **problem_responses(401, 403, 404)},
)
async def follow_order(
    order_id: UUID,
    caller: Reader,
    streams: Streams,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> Response:
    """Follow one of your orders (Server-Sent Events): its state now, then each change."""
    stream = await streams.open(
        order_id, viewer=viewer_of(caller), last_seen=_cursor(last_event_id)
    )
    if stream is None:
        return Response(status_code=204, headers=STREAM_HEADERS)
    return OrderEventResponse(stream)
