"""A pybreaker circuit breaker per dependency, its state logged and exported as a metric."""

from __future__ import annotations

import logging
from typing import Any

import pybreaker
from prometheus_client import CollectorRegistry, Gauge

log = logging.getLogger("bazaar.orders.breaker")

#: Gauge values of the breaker states.
STATE_VALUES = {"closed": 0, "half-open": 1, "open": 2}


class _StateListener(pybreaker.CircuitBreakerListener):
    def __init__(self, gauge: Gauge | None) -> None:
        self._gauge = gauge

    def state_change(self, cb: pybreaker.CircuitBreaker, old: Any, new: Any) -> None:
        old_name = getattr(old, "name", str(old))
        new_name = getattr(new, "name", str(new))
        if new_name == old_name:  # a failure while already open re-enters the same state
            return
        level = logging.WARNING if new_name == "open" else logging.INFO
        log.log(
            level,
            "circuit %s: %s -> %s",
            cb.name,
            old_name,
            new_name,
            extra={"dependency": cb.name, "state": new_name},
        )
        if self._gauge is not None:
            self._gauge.labels(cb.name).set(STATE_VALUES.get(new_name, -1))


def make_breaker(
    name: str, *, fail_max: int, reset_timeout: float, registry: CollectorRegistry | None = None
) -> pybreaker.CircuitBreaker:
    """A breaker for `name`: opens after `fail_max` failures in a row, probes after the timeout.

    A cancelled call counts as a failure: the call's own deadline cancels the attempt that
    outlives it, so a hanging dependency must trip the breaker. (pybreaker has no neutral
    outcome: an excluded exception counts as a success and resets the failure count.) The
    failure that trips the breaker is raised as it was, never swapped for a
    CircuitBreakerError, so a cancellation stays a cancellation.
    """
    gauge = None
    if registry is not None:
        gauge = Gauge(
            "bazaar_circuit_breaker_state",
            "Circuit breaker state per dependency (0 closed, 1 half-open, 2 open).",
            ["dependency"],
            registry=registry,
        )
        gauge.labels(name).set(0)
    return pybreaker.CircuitBreaker(
        fail_max=fail_max,
        reset_timeout=reset_timeout,
        throw_new_error_on_trip=False,
        listeners=[_StateListener(gauge)],
        name=name,
    )
