"""The faults, one after another under load, and what the clients saw around each.

A fault's *end* is when the thing is back: the killed process restarted (by the supervisor)
and answering its own /readyz, the stopped process continued, the restarted server accepting
connections again. Recovery is the time from that end to the first order answered 201 that
was sent after it (a 202 pending is accepted, not yet successful: the table shows the first
2xx apart).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

from chaos_load import Attempt, Load
from chaos_suite import Suite

T = TypeVar("T")
#: Every fault, as `--only` matches them (the SIGSTOP's name also carries its seconds).
FAULT_NAMES = (
    "SIGKILL orders", "SIGKILL catalog", "SIGKILL gateway", "SIGSTOP catalog",
    "restart RabbitMQ", "restart PostgreSQL", "restart Redis",
)  # fmt: skip


class Restartable(Protocol):
    """What an infrastructure fault needs: a blocking restart."""

    def restart(self, down_seconds: float) -> None:
        """Stop, stay down, start again; return once it serves."""


@dataclass
class Outcome:
    """One fault's timeline (time.monotonic()) and its recovery."""

    name: str
    started: float
    ended: float = 0.0
    recovered: float | None = None  # the first 201 sent after `ended` was answered then
    accepted: float | None = None  # the first 2xx (201 or 202 pending) likewise

    @property
    def recovery_s(self) -> float | None:
        """Seconds from the end of the fault to the first successful order after it."""
        return None if self.recovered is None else self.recovered - self.ended


def _kill(suite: Suite, name: str) -> Callable[[], None]:
    def inject() -> None:
        pid = suite.pid(name)
        assert pid is not None, f"{name} has no pid"
        os.kill(pid, signal.SIGKILL)
        suite.wait_back(name, pid)

    return inject


def _pause(suite: Suite, name: str, seconds: float) -> Callable[[], None]:
    def inject() -> None:
        pid = suite.pid(name)
        assert pid is not None, f"{name} has no pid"
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    return inject


def catalog_of_faults(
    suite: Suite, infra: dict[str, Restartable], down_seconds: float, pause_seconds: float
) -> list[tuple[str, Callable[[], None]]]:
    """Every fault of the soak, in order; infrastructure faults only where it is ours."""
    faults = [
        ("SIGKILL orders", _kill(suite, "orders")),
        ("SIGKILL catalog", _kill(suite, "catalog")),
        ("SIGKILL gateway", _kill(suite, "gateway")),
        (f"SIGSTOP catalog {pause_seconds:g} s", _pause(suite, "catalog", pause_seconds)),
    ]
    for label, key in (("RabbitMQ", "rabbitmq"), ("PostgreSQL", "postgres"), ("Redis", "redis")):
        if key in infra:
            faults.append((f"restart {label}", partial(infra[key].restart, down_seconds)))
    return faults


def select(faults: list[tuple[str, T]], only: str | None) -> list[tuple[str, T]]:
    """The faults naming any of `only`'s comma-separated words (all of them without `only`)."""
    if not only:
        return faults
    words = [w.strip().lower() for w in only.split(",") if w.strip()]
    return [f for f in faults if any(w in f[0].lower() for w in words)]


def _first_answer(attempts: list[Attempt], since: float, statuses: tuple[int, ...]) -> float | None:
    times = [
        a.answered
        for a in attempts
        if a.kind == "order" and a.status in statuses and a.sent >= since
    ]
    return min(times) if times else None


async def run_faults(
    faults: list[tuple[str, Callable[[], None]]], load: Load, *, wait: float, gap: float
) -> list[Outcome]:
    """Inject each fault, wait for recovery (at most `wait` s), then `gap` s of calm."""
    outcomes = []
    for name, inject in faults:
        print(f"  fault: {name} …", flush=True)
        outcome = Outcome(name, time.monotonic())
        await asyncio.to_thread(inject)
        outcome.ended = time.monotonic()
        deadline = outcome.ended + wait
        while time.monotonic() < deadline:
            outcome.recovered = _first_answer(load.attempts, outcome.ended, (201,))
            if outcome.recovered is not None:
                break
            await asyncio.sleep(0.1)
        outcome.accepted = _first_answer(load.attempts, outcome.ended, (201, 202))
        shown = f"{outcome.recovery_s:.2f} s" if outcome.recovery_s is not None else "none"
        print(
            f"    back after {outcome.ended - outcome.started:.1f} s; recovery {shown}", flush=True
        )
        outcomes.append(outcome)
        await asyncio.sleep(gap)
    return outcomes


def table(outcomes: list[Outcome], load: Load, first: float, last: float) -> list[str]:
    """One row per window (before the faults, then each fault until the next one)."""
    head = (
        f"{'window':<22} {'down s':>6} {'recov s':>7} {'2xx s':>5} {'answers':>7} {'201':>6} {'202':>5} "
        f"{'5xx by status':<26} {'conn err':>8} {'409 in-use':>10}"
    )
    rows = [head, "-" * len(head)]
    starts = [first, *(o.started for o in outcomes), last]
    names = ["before the faults", *(o.name for o in outcomes)]
    for index, name in enumerate(names):
        window = [a for a in load.attempts if starts[index] <= a.answered < starts[index + 1]]
        statuses = Counter(a.status for a in window)
        errors = sum(1 for a in window if a.status is None)
        in_use = sum(1 for a in window if a.slug == "idempotency-key-in-use")
        fives = " ".join(
            f"{s}:{statuses[s]}" for s in sorted(s for s in statuses if s and s >= 500)
        )
        outcome = outcomes[index - 1] if index else None
        down = f"{outcome.ended - outcome.started:.1f}" if outcome else "-"
        recovery = accepted = "-"
        if outcome is not None:
            recovery = f"{outcome.recovery_s:.2f}" if outcome.recovery_s is not None else "none"
            if outcome.accepted is not None:
                accepted = f"{outcome.accepted - outcome.ended:.2f}"
        rows.append(
            f"{name:<22} {down:>6} {recovery:>7} {accepted:>5} {len(window):>7} {statuses[201]:>6} "
            f"{statuses[202]:>5} {fives or '-':<26} {errors:>8} {in_use:>10}"
        )
    rows.append("")
    for index, name in enumerate(names):
        kinds = Counter(
            f"{a.status} {a.slug or '?'} ({a.detail})"
            for a in load.attempts
            if starts[index] <= a.answered < starts[index + 1] and a.status and a.status >= 500
        )
        if kinds:
            rows.append(f"5xx in {name}:")
            rows += [f"  {count:>6} {kind}" for kind, count in kinds.most_common(6)]
    return rows
