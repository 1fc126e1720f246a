"""The soak's last lines: the verdict line the test parses, and which targets it missed."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from chaos_load import Load
from chaos_rules import Verdict

#: API.md: ready and serving within 3 s of a dependency coming back.
TARGET_RECOVERY_S = 3.0
#: The full form must answer at least this share of the offered rate (not judged for --short).
RATE_TARGET = 0.9


@dataclass(frozen=True)
class Rate:
    """Journeys per second of load: with a final answer, and placed (201/202)."""

    answered: float
    placed: float


def achieved(load: Load) -> Rate:
    """Order journeys that got a final answer (201, 202, 409 insufficient-stock) per second."""
    final: dict[str, int] = {}
    for a in load.attempts:
        if a.kind == "order" and (a.status in (201, 202) or a.slug == "insufficient-stock"):
            final.setdefault(a.key, a.status or 0)
    seconds = load.seconds or 1.0
    placed = sum(1 for status in final.values() if status in (201, 202))
    return Rate(len(final) / seconds, placed / seconds)


def _http5xx(load: Load) -> tuple[int, int]:
    statuses = Counter(a.status for a in load.attempts if a.status and a.status >= 500)
    return statuses[500], sum(statuses.values()) - statuses[500]


def states_line(verdict: Verdict, load: Load) -> str:
    """How much the run covered: final states stored, and 202 answers."""
    answered_202 = sum(1 for a in load.attempts if a.kind == "order" and a.status == 202)
    return f"states: {verdict.states} answered_202={answered_202}"


def verdict_line(verdict: Verdict, load: Load, worst_recovery: float) -> str:
    """The issue's line (its names first, in its order), then the soak's further counters."""
    http500, other = _http5xx(load)
    return (
        f"chaos: orders={verdict.orders} lost={verdict.lost} duplicated={verdict.duplicated} "
        f"oversold={verdict.oversold} stuck_pending={verdict.stuck_pending} "
        f"events_missing={verdict.events_missing} http500={http500} "
        f"max_recovery_s={worst_recovery:.2f} unreleased={verdict.unreleased} "
        f"unexpected={verdict.unexpected} unfinished={load.unfinished} http5xx_other={other}"
    )


def failed(verdict: Verdict, load: Load, worst_recovery: float) -> bool:
    """Whether a target is missed: a counter above zero, or a slow recovery."""
    counters = (
        verdict.lost, verdict.duplicated, verdict.oversold, verdict.stuck_pending,
        verdict.events_missing, verdict.unreleased, verdict.unexpected, load.unfinished,
        _http5xx(load)[0],
    )  # fmt: skip
    return any(counters) or worst_recovery > TARGET_RECOVERY_S
