"""One attempt at an upstream, as aiohttp sends it: no default headers of aiohttp's own, and
whether a failed attempt provably never reached the upstream (so even an unsafe one may retry).
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from weakref import WeakSet

import aiohttp
from aiohttp.client_proto import ResponseHandler
from multidict import CIMultiDict

_SKIPPED_DEFAULTS: CIMultiDict[None] = CIMultiDict(
    (name, None) for name in ("Accept-Encoding", "Content-Type", "User-Agent")
)
#: Failures after which a request provably never reached the upstream when they happen on
#: a pooled connection before any byte of the answer: the upstream had closed it idle.
_STALE_POOLED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


class Attempt:
    """Whether one attempt's request went out on a connection from the pool (one that had
    carried a request before) rather than on a fresh one."""

    __slots__ = ("reused",)

    def __init__(self) -> None:
        self.reused = False


#: The attempt the current task is making (set around `ClientSession.request`).
ATTEMPT: ContextVar[Attempt | None] = ContextVar("attempt", default=None)
#: Connections (their protocols) that have carried a request: sent on again, they are reused.
_CARRIED: WeakSet[ResponseHandler] = WeakSet()


class ForwardRequest(aiohttp.ClientRequest):
    """A request sent on a client's behalf: aiohttp adds no User-Agent, Accept-Encoding or
    Content-Type of its own (the client's are forwarded as they are); `Accept: */*` is
    added when the client sent none, as aiohttp does.

    The session's `skip_auto_headers` would do the same, with a sort and two header copies
    on every request.

    It also tells the current `ATTEMPT` whether its connection came from the pool: an
    aiohttp TraceConfig would too, at the cost of a trace object and a signal per event
    of every request.
    """

    async def send(self, conn: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        """Note whether the connection carried a request before, then send as aiohttp does."""
        protocol = conn.protocol
        if protocol is not None:
            if protocol in _CARRIED:
                attempt = ATTEMPT.get()
                if attempt is not None:
                    attempt.reused = True
            else:
                _CARRIED.add(protocol)
        return await super().send(conn)

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:  # noqa: ARG002
        """Skip aiohttp's defaults (see the class)."""
        self._skip_auto_headers = _SKIPPED_DEFAULTS
        if "Accept" not in self.headers:
            self.headers["Accept"] = "*/*"


def never_reached(exc: aiohttp.ClientConnectionError, attempt: Attempt) -> bool:
    """Whether the request provably never reached the upstream: no connection was made, or
    a pooled one turned out closed before any byte of the answer (the upstream had closed
    it idle). A fresh connection closed before the answer proves nothing: the upstream may
    have done the work and died before answering."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return True
    if isinstance(exc, aiohttp.ServerDisconnectedError) and not isinstance(exc.message, str):
        return False  # part of the answer's head had arrived
    return attempt.reused and isinstance(exc, _STALE_POOLED)
