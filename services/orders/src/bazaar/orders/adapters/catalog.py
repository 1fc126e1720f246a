"""The catalog client: reservations over REST with timeouts, retries, a breaker and a token."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import aiohttp
import pybreaker
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from bazaar.orders.adapters.breaker import is_trial_due
from bazaar.orders.adapters.tokens import ServiceTokens, TokenUnavailable
from bazaar.orders.domain.model import OrderLine, PricedReservation, RequestedLine
from bazaar.orders.service.ports import (
    CatalogState,
    Invalid,
    OutOfStock,
    Reserved,
    ReserveOutcome,
    Unavailable,
)
from bazaar.shared.tracecontext import current_request_id, current_traceparent

log = logging.getLogger("bazaar.orders.catalog")

#: Answers that say "try again": the only statuses retried, besides connection errors.
RETRYABLE_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """How long to wait for catalog, and how often to try."""

    connect_timeout: float = 1.0
    read_timeout: float = 2.0
    #: The whole call, every attempt and pause included.
    deadline: float = 4.0
    attempts: int = 3
    backoff_initial: float = 0.05
    backoff_max: float = 1.0


class CatalogUnavailable(Exception):
    """Catalog could not give an answer (down, hanging, failing, breaker open)."""

    def __init__(self, reason: str, *, reached: bool = True) -> None:
        super().__init__(reason)
        #: False when the call never left (no token, breaker open).
        self.reached = reached


class _Retryable(Exception):
    """A failure worth another attempt: a connection error, a timeout, 502/503/504."""


class _Failed(Exception):
    """A failure of catalog's (a 5xx other than those retried): counted, not retried."""


class CatalogClient:
    """Reserve and release stock in catalog; one pooled aiohttp session for the process."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        tokens: ServiceTokens,
        breaker: pybreaker.CircuitBreaker,
        policy: CallPolicy | None = None,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._tokens = tokens
        self.breaker = breaker
        self._policy = policy or CallPolicy()
        #: Answers (any status below 500) catalog gave to any call of this client.
        self.answers = 0
        # `connect` would also count the wait for a free connection of our own pool: a busy
        # pool is not a failing catalog (the deadline bounds that wait), so only the socket
        # connect and each read are timed per attempt.
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None,
            sock_connect=self._policy.connect_timeout,
            sock_read=self._policy.read_timeout,
        )

    def state(self) -> CatalogState:
        """What catalog's breaker lets through now: everything, one trial call, or nothing."""
        current = self.breaker.current_state
        if current == pybreaker.STATE_CLOSED:
            return CatalogState.UP
        if current == pybreaker.STATE_OPEN and not is_trial_due(self.breaker):
            return CatalogState.DOWN
        return CatalogState.TRIAL

    async def reserve(self, order_id: UUID, lines: Sequence[RequestedLine]) -> ReserveOutcome:
        """Reserve the order's lines; every attempt carries the same Idempotency-Key."""
        body = {
            "order_id": str(order_id),
            "lines": [{"product_id": str(li.product_id), "quantity": li.quantity} for li in lines],
        }
        headers = {"Idempotency-Key": f"order-{order_id}"}
        before, own = self.answers, _Call()
        answer: tuple[int, Any] | CatalogUnavailable
        try:
            answer = await self._call("POST", "/v1/reservations", body, headers, own)
        except CatalogUnavailable as exc:
            answer = exc
        # Whether catalog answered other calls meanwhile: it is up, this order's call failed.
        others = self.answers - before - own.answers > 0
        if isinstance(answer, CatalogUnavailable):
            return Unavailable(str(answer), reached=answer.reached, others_answered=others)
        status, payload = answer
        slug = _slug(payload)
        if status in (200, 201):
            return Reserved(_reservation(payload))
        if status == 409 and slug == "insufficient-stock":
            ids = payload.get("product_ids", []) if isinstance(payload, dict) else []
            return OutOfStock(tuple(UUID(str(p)) for p in ids))
        if status == 422 and slug == "validation-error":
            detail = payload.get("detail") if isinstance(payload, dict) else None
            return Invalid(str(detail or "Catalog refused the lines."))
        if status == 409 and slug == "idempotency-key-in-use":
            return Unavailable(
                "an earlier attempt is still in flight in catalog",
                reached=True,
                others_answered=others,
            )
        log.error(
            "catalog refused a reservation unexpectedly",
            extra={"order_id": str(order_id), "status": status, "problem": slug},
        )
        return Unavailable(
            f"catalog answered {status} {slug or ''}".strip(), reached=True, others_answered=others
        )

    async def release(self, reservation_id: UUID) -> bool:
        """Release a reservation (idempotent); False when catalog could not be asked."""
        try:
            path = f"/v1/reservations/{reservation_id}"
            status, _ = await self._call("DELETE", path, None, {}, _Call())
        except CatalogUnavailable as exc:
            log.warning("could not release a reservation: %s", exc)
            return False
        if status == 404:
            log.warning("catalog knows no reservation %s", reservation_id)
        elif status != 204:
            log.error("catalog refused a release", extra={"status": status})
            return False
        return True

    async def _call(
        self, method: str, path: str, body: Any, headers: dict[str, str], own: _Call
    ) -> tuple[int, Any]:
        policy = self._policy
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.attempts),
            wait=wait_exponential_jitter(
                multiplier=policy.backoff_initial,
                jitter=policy.backoff_initial,
                max=policy.backoff_max,
            ),
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        )
        try:
            async with asyncio.timeout(policy.deadline) as own.deadline:
                async for attempt in retrying:
                    with attempt:
                        answer = await self._attempt(method, path, body, headers, own)
        except TimeoutError as exc:
            raise CatalogUnavailable(f"no answer within {policy.deadline:g} s") from exc
        except (_Retryable, _Failed) as exc:
            raise CatalogUnavailable(str(exc)) from exc
        except pybreaker.CircuitBreakerError as exc:
            raise CatalogUnavailable("catalog's circuit breaker is open", reached=False) from exc
        except TokenUnavailable as exc:
            raise CatalogUnavailable(f"no service token: {exc}", reached=False) from exc
        return answer

    async def _attempt(
        self, method: str, path: str, body: Any, headers: dict[str, str], own: _Call
    ) -> tuple[int, Any]:
        token = await self._tokens.get()
        status, payload = await self._send(method, path, body, headers, token, own)
        if status == 401:
            # Our token may have expired early or its key rotated: one fresh token, once.
            self._tokens.invalidate(token)
            token = await self._tokens.get()
            status, payload = await self._send(method, path, body, headers, token, own)
        return status, payload

    async def _send(
        self, method: str, path: str, body: Any, headers: dict[str, str], token: str, own: _Call
    ) -> tuple[int, Any]:
        outgoing = {**headers, "Authorization": f"Bearer {token}"}
        if traceparent := current_traceparent():
            outgoing["traceparent"] = traceparent
        if request_id := current_request_id():
            outgoing["X-Request-ID"] = request_id
        cancelled = False
        try:
            with self.breaker.calling():
                exchange = asyncio.ensure_future(self._exchange(method, path, body, outgoing, own))
                while not exchange.done():
                    try:
                        await asyncio.shield(exchange)
                    except asyncio.CancelledError:
                        if own.deadline is None or own.deadline.expired():
                            exchange.cancel()  # catalog did not answer in time: a failure
                            raise
                        # Cancelled from outside (shutdown): nothing catalog did. The attempt
                        # runs on to its socket timeouts, so the breaker counts what catalog
                        # really did, never the cancellation.
                        cancelled = True
                status, payload = exchange.result()
        finally:
            if cancelled:
                raise asyncio.CancelledError
        return status, payload

    async def _exchange(
        self, method: str, path: str, body: Any, headers: dict[str, str], own: _Call
    ) -> tuple[int, Any]:
        """One request and its answer; raises what the breaker counts as catalog failing."""
        try:
            async with self._session.request(
                method,
                self._base_url + path,
                json=body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                if status < 500:
                    self.answers += 1
                    own.answers += 1
                payload = None
                if status != 204:
                    payload = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Retryable(f"{type(exc).__name__} calling catalog: {exc}") from exc
        except ValueError as exc:  # not JSON: something between us is answering
            raise _Failed(f"catalog answered {status} without JSON") from exc
        if status in RETRYABLE_STATUSES:
            raise _Retryable(f"catalog answered {status}")
        if status >= 500:
            raise _Failed(f"catalog answered {status}")
        return status, payload


@dataclass(slots=True)
class _Call:
    """One call to catalog: the answers it got (to tell them from other calls') and deadline."""

    answers: int = 0
    deadline: asyncio.Timeout | None = None


def _slug(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return None
    problem_type = payload.get("type")
    return str(problem_type).rsplit("/", 1)[-1] if problem_type else None


def _reservation(payload: Any) -> PricedReservation:
    lines = tuple(
        OrderLine(
            product_id=UUID(str(line["product_id"])),
            quantity=int(line["quantity"]),
            sku=str(line["sku"]),
            name=str(line["name"]),
            unit_price_cents=int(line["unit_price_cents"]),
        )
        for line in payload["lines"]
    )
    return PricedReservation(
        id=UUID(str(payload["id"])),
        lines=lines,
        total_cents=int(payload["total_cents"]),
        currency=str(payload["currency"]),
    )
