"""The soak's clients: customers placing and cancelling orders through the gateway.

Open loop: a new order journey starts every 1/rate seconds, whatever the answers. A journey
keeps one Idempotency-Key and retries it (back-off with jitter) on 5xx, connection errors,
429 and 409 idempotency-key-in-use until a final answer; then it may cancel the order,
retrying the cancel likewise. Every attempt is recorded (when, what, which order it named).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

#: Answers after which a journey retries the same request.
RETRIED_SLUGS = ("idempotency-key-in-use", "rate-limited")
#: The longest Retry-After a client waits for (the soak wants to see recovery, not sleep).
MAX_RETRY_AFTER = 5.0


@dataclass(slots=True)
class Attempt:
    """One request and what came of it."""

    kind: str  # "order" or "cancel"
    key: str
    sent: float  # time.monotonic()
    answered: float
    status: int | None  # None: no HTTP answer (error says why)
    error: str = ""
    slug: str = ""
    order_id: str | None = None
    order_status: str | None = None
    retry_after: float = 0.0
    detail: str = ""  # of a 5xx problem, to tell its causes apart


@dataclass
class Customer:
    """A registered customer and its bearer token."""

    email: str
    token: str
    user_id: str


@dataclass
class Load:
    """What the clients did, for the checks."""

    attempts: list[Attempt] = field(default_factory=list)
    journeys: int = 0
    unfinished: int = 0  # journeys still without a final answer at their deadline
    skipped: int = 0  # journeys not started: too many in flight
    seconds: float = 0.0  # how long journeys were started
    keys: dict[str, str] = field(default_factory=dict)  # key -> customer user id


def _slug(body: Any) -> str:
    kind = body.get("type", "") if isinstance(body, dict) else ""
    return str(kind).rsplit("/", 1)[-1]


def _order_id(body: Any) -> tuple[str | None, str | None]:
    if not isinstance(body, dict):
        return None, None
    if "id" in body and "status" in body:
        return str(body["id"]), str(body["status"])
    order_id = body.get("order_id")
    return (str(order_id), None) if order_id else (None, None)


def _detail(body: Any) -> str:
    detail = str(body.get("detail", "")) if isinstance(body, dict) else ""
    return detail.split(";")[0][:70]


def _seconds(value: str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


def _is_final(attempt: Attempt) -> bool:
    if attempt.status is None or attempt.status >= 500 or attempt.status == 429:
        return False
    return not (attempt.status == 409 and attempt.slug in RETRIED_SLUGS)


class Clients:
    """The customers' HTTP clients against one gateway."""

    def __init__(self, gateway: str, customers: list[Customer], products: list[str]) -> None:
        self.gateway = gateway
        self.customers = customers
        self.products = products
        self.load = Load()
        self.run = uuid.uuid4().hex[:8]
        self.deadline_seconds = 120.0
        self.cancel_fraction = 0.15
        self._session: aiohttp.ClientSession | None = None

    async def _send(
        self, kind: str, key: str, customer: Customer, url: str, body: Any, headers: dict[str, str]
    ) -> Attempt:
        assert self._session is not None
        sent = time.monotonic()
        try:
            async with self._session.post(
                url, json=body, headers={"Authorization": f"Bearer {customer.token}", **headers}
            ) as answer:
                try:
                    parsed = await answer.json(content_type=None)
                except ValueError:
                    parsed = None
                order_id, order_status = _order_id(parsed)
                attempt = Attempt(
                    kind, key, sent, time.monotonic(), answer.status,
                    slug=_slug(parsed), order_id=order_id, order_status=order_status,
                    retry_after=_seconds(answer.headers.get("Retry-After")),
                    detail=_detail(parsed) if answer.status >= 500 else "",
                )  # fmt: skip
        except (aiohttp.ClientError, TimeoutError) as error:
            attempt = Attempt(kind, key, sent, time.monotonic(), None, error=type(error).__name__)
        self.load.attempts.append(attempt)
        return attempt

    async def _until_final(
        self, kind: str, key: str, customer: Customer, url: str, body: Any, headers: dict[str, str]
    ) -> Attempt | None:
        give_up = time.monotonic() + self.deadline_seconds
        pause = 0.1
        while True:
            attempt = await self._send(kind, key, customer, url, body, headers)
            if _is_final(attempt):
                return attempt
            if time.monotonic() + pause > give_up:
                return None
            # A polite client: at least the Retry-After it was given (capped), jittered.
            wait = max(pause, min(attempt.retry_after, MAX_RETRY_AFTER))
            await asyncio.sleep(wait * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 2.0)

    async def journey(self, number: int) -> None:
        """Place one order (retrying its key); cancel a fraction of those placed."""
        customer = self.customers[number % len(self.customers)]
        key = f"chaos-{self.run}-{number}"
        self.load.keys[key] = customer.user_id
        chosen = random.sample(self.products, random.randint(1, min(3, len(self.products))))
        lines = [{"product_id": p, "quantity": random.randint(1, 3)} for p in chosen]
        placed = await self._until_final(
            "order", key, customer, f"{self.gateway}/v1/orders", {"lines": lines},
            {"Idempotency-Key": key},
        )  # fmt: skip
        if placed is None:
            self.load.unfinished += 1
            return
        if placed.status in (201, 202) and random.random() < self.cancel_fraction:
            await asyncio.sleep(random.uniform(0, 2))
            url = f"{self.gateway}/v1/orders/{placed.order_id}/cancel"
            if await self._until_final("cancel", key, customer, url, None, {}) is None:
                self.load.unfinished += 1

    async def run_until(self, rate: float, stop: asyncio.Event, max_in_flight: int = 1000) -> None:
        """Start `rate` journeys a second until `stop` is set; then wait for every journey."""
        connector = aiohttp.TCPConnector(limit=max_in_flight)
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            self._session = session
            running: set[asyncio.Task[None]] = set()
            start = time.monotonic()
            number = 0
            while not stop.is_set():
                due = int((time.monotonic() - start) * rate) - number
                for _ in range(due):
                    number += 1
                    if len(running) >= max_in_flight:
                        self.load.skipped += 1
                        continue
                    task = asyncio.create_task(self.journey(number))
                    running.add(task)
                    task.add_done_callback(running.discard)
                await asyncio.sleep(0.01)
            self.load.journeys = number
            self.load.seconds = time.monotonic() - start
            if running:
                await asyncio.gather(*running)
