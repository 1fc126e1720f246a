"""Which rate-limit policies a request counts against, and their verdict (with its metrics);
how many event streams each caller holds open.

A request counts once against its rate-limit policies, however long its answer runs: a
Server-Sent Events stream is one request. Open streams are limited apart, per caller (the
token's `sub`, else the client address): `OpenStreams` counts them on this replica (a
Redis count would outlive a replica that dies holding streams; the limit bounds what one
replica holds), publishes `gateway_open_streams`, and ends them all at shutdown.
"""

from __future__ import annotations

import asyncio
import sys

from bazaar.gateway.config import GatewaySettings
from bazaar.gateway.errors import RateLimited
from bazaar.gateway.metrics import GatewayMetrics
from bazaar.gateway.ratelimit import Policy, RateLimiter, Verdict, token_subject
from bazaar.gateway.routes import Route
from bazaar.gateway.tally import CounterTally, TallyCollector
from bazaar.shared.auth import Principal

#: The media type of Server-Sent Events: an answer of this type is a stream.
EVENT_STREAM = "text/event-stream"
#: Seconds a client refused a stream is told to wait: a stream has no known end, so this is
#: a pause, not a promise.
STREAM_RETRY_AFTER = 5


class Admission:
    """The gateway's rate limits, built once from the settings."""

    def __init__(
        self, settings: GatewaySettings, limiter: RateLimiter, metrics: GatewayMetrics
    ) -> None:
        self.enabled = settings.rate_limiting
        self.limiter = limiter
        self.metrics = metrics
        self.policies = {
            name: Policy(name, p.quota, p.window) for name, p in settings.rate_limits.items()
        }
        # Like the rate limits, off only for measurements (bench/): streams are still counted.
        per_user = settings.max_streams_per_user if self.enabled else sys.maxsize
        self.streams = OpenStreams(per_user)
        metrics.registry.register(self.streams.collector())

    def stream_slot(
        self, principal: Principal | None, client: str, accept: str | None
    ) -> StreamSlot:
        """The caller's slot for an event stream; taken now (RateLimited when the caller
        holds its limit) if the request asks for one (`Accept: text/event-stream`), so the
        refused request never reaches the upstream; else taken if the answer is one."""
        who = f"sub:{principal.subject}" if principal is not None else f"address:{client}"
        slot = StreamSlot(self.streams, who)
        if accept is not None and EVENT_STREAM in accept.lower():
            slot.take()
        return slot

    async def for_address(self, client: str) -> Verdict:
        """Count an early answer (404, 401, 413…) against the client's address."""
        if not self.enabled:
            return Verdict([])
        return await self._limit([(self.policies["anonymous"], client)])

    async def for_request(
        self,
        route: Route,
        principal: Principal | None,
        client: str,
        body: bytes | bytearray | None,
        authorization: str | None,
    ) -> Verdict:
        """Count a routed request against its caller's policy and its route's own."""
        if not self.enabled:
            return Verdict([])
        checks: list[tuple[Policy, str]] = []
        if principal is not None:
            checks.append((self.policies["user"], principal.subject))
        else:
            checks.append((self.policies["anonymous"], client))
        extra = route.config.rate_limit
        if extra == "token":
            who = token_subject(body, authorization)
            if who is not None:  # refresh grants count only against the address policy
                checks.append((self.policies["token"], f"{client}|{who}"))
        elif extra is not None:
            checks.append((self.policies[extra], principal.subject if principal else client))
        return await self._limit(checks)

    async def _limit(self, checks: list[tuple[Policy, str]]) -> Verdict:
        verdict = await self.limiter.hit(checks)
        for decision in verdict.decisions:
            outcome = "allowed" if decision.allowed else "denied"
            self.metrics.rate_limit.inc((decision.policy.name, outcome))
        return verdict


class OpenStreams:
    """The event streams open on this replica: at most `per_user` per caller."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._held: dict[str, int] = {}
        self._open: set[StreamSlot] = set()
        self._refused = CounterTally(
            "gateway_streams_refused",
            "Event streams refused because their caller held as many as allowed.",
            [],
        )
        self._refused.counts[()] = 0
        #: Set once the replica shuts down: streams end, and no new one begins.
        self.ending = False

    @property
    def count(self) -> int:
        """Streams open now."""
        return len(self._open)

    def held_by(self, who: str) -> int:
        """Streams `who` holds open now."""
        return self._held.get(who, 0)

    def collector(self) -> TallyCollector:
        """`gateway_open_streams` (read when scraped) and `gateway_streams_refused_total`."""
        return TallyCollector(
            [self._refused],
            [("gateway_open_streams", "Event streams open now.", lambda: self.count)],
        )

    def end_all(self) -> None:
        """End every open stream cleanly (at shutdown): each ends as soon as it is waiting
        for its upstream, or once its current write to the client is done."""
        self.ending = True
        for slot in list(self._open):
            slot.end()

    def _take(self, slot: StreamSlot) -> None:
        held = self._held.get(slot.who, 0)
        if held >= self.per_user:
            self._refused.inc(())
            raise RateLimited(
                f"You hold {held} open event streams, the most allowed; close one first.",
                headers={"Retry-After": str(STREAM_RETRY_AFTER)},
            )
        self._held[slot.who] = held + 1
        self._open.add(slot)

    def _give_back(self, slot: StreamSlot) -> None:
        self._open.discard(slot)
        held = self._held.get(slot.who, 0) - 1
        if held > 0:
            self._held[slot.who] = held
        else:
            self._held.pop(slot.who, None)


class StreamSlot:
    """One request's place among its caller's open streams, held while its stream runs."""

    __slots__ = ("_streams", "held", "timer", "who")

    def __init__(self, streams: OpenStreams, who: str) -> None:
        self._streams = streams
        self.who = who
        self.held = False
        #: The timeout of the stream's wait for its upstream, while it waits (see `end`).
        self.timer: asyncio.Timeout | None = None

    @property
    def ending(self) -> bool:
        """Whether the stream is to end cleanly now (the replica shuts down)."""
        return self._streams.ending

    def take(self) -> None:
        """Count the stream against its caller (RateLimited when the caller holds its limit)."""
        if not self.held:
            self._streams._take(self)
            self.held = True

    def give_back(self) -> None:
        """The stream is over (or the answer is none): free the place."""
        if self.held:
            self.held = False
            self._streams._give_back(self)

    def end(self) -> None:
        """Cut short the stream's wait for its upstream, if it waits (it is `ending`)."""
        if self.timer is not None and not self.timer.expired():
            self.timer.reschedule(asyncio.get_running_loop().time())
