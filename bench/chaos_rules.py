"""The soak's invariants as pure functions over what the clients saw and the tables hold.

Rows are mappings as the services store them: orders (id, customer_id, status, lines,
idempotency_key, stock_released, release_pending), reservations (one row per line: id,
order_id, status, product_id, quantity), products (id, stock). The I/O is in chaos_checks.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chaos_load import Attempt, Load

Row = Mapping[str, Any]
#: What each final order state must have announced (routing key = type).
EVENT_OF_STATUS = {
    "confirmed": "orders.order.placed",
    "cancelled": "orders.order.cancelled",
    "rejected": "orders.order.rejected",
}
#: Order answers a client may get besides 5xx, 429 and a lost connection (slug or "" = any).
EXPECTED_ORDER = {201: "", 202: "", 409: ("insufficient-stock", "idempotency-key-in-use")}
#: Cancel answers likewise: done, or a conflict (already rejected, …).
EXPECTED_CANCEL = {200: "", 409: ""}


@dataclass
class Verdict:
    """The soak's counters, and the details behind the non-zero ones."""

    orders: int = 0
    lost: int = 0
    duplicated: int = 0
    oversold: int = 0
    stuck_pending: int = 0
    events_missing: int = 0
    unreleased: int = 0
    unexpected: int = 0
    states: str = ""  # confirmed=N rejected=N cancelled=N pending=N
    checked: str = ""
    details: list[str] = field(default_factory=list)

    def count(self, counter: str, detail: str) -> None:
        """Add one to `counter` and say why."""
        setattr(self, counter, getattr(self, counter) + 1)
        self.details.append(f"{counter}: {detail}")


def _lines(row: Row) -> list[dict[str, Any]]:
    lines = row["lines"]
    return list(json.loads(lines) if isinstance(lines, str) else lines)


def lost(load: Load, by_id: Mapping[str, Row], verdict: Verdict) -> None:
    """An order some answer named that is not stored, or acknowledged but in another state."""
    for attempt in load.attempts:
        if attempt.order_id is None or attempt.status is None:
            continue
        row = by_id.get(attempt.order_id)
        cancelled = attempt.kind == "cancel" and attempt.status == 200
        confirmed = attempt.status == 201 and attempt.order_status == "confirmed"
        if row is None:
            verdict.count(
                "lost", f"{attempt.kind} answered {attempt.status} naming {attempt.order_id}"
            )
        elif cancelled and row["status"] != "cancelled":
            verdict.count("lost", f"cancel of {attempt.order_id} answered 200, {row['status']}")
        elif confirmed and row["status"] not in ("confirmed", "cancelled"):
            verdict.count("lost", f"{attempt.order_id} answered 201, {row['status']}")


def duplicated(load: Load, rows: Iterable[Row], verdict: Verdict) -> None:
    """One key, two orders: in the table (per customer and key), in answers, or unasked for.

    `rows` are every stored order of the soak's customers, not one per key.
    """
    stored: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    for row in rows:
        key = row["idempotency_key"]
        stored[(str(row["customer_id"]), key)].append(row["id"])
        if key not in load.keys or load.keys[key] != str(row["customer_id"]):
            verdict.count("duplicated", f"order {row['id']} has key {key!r} no journey used")
    for (customer, key), ids in stored.items():
        if len(ids) > 1:
            verdict.count("duplicated", f"key {key} of {customer} stored {sorted(ids)}")
    named: dict[str, set[str]] = defaultdict(set)
    for attempt in load.attempts:
        if attempt.kind == "order" and attempt.order_id is not None:
            named[attempt.key].add(attempt.order_id)
    for key, answered in named.items():
        both = set(answered) | set(stored.get((load.keys.get(key, ""), key), []))
        if len(both) > 1:
            verdict.count("duplicated", f"key {key} answers named {sorted(both)}")


def oversold(
    initial: Mapping[str, int], stock: Iterable[Row], by_id: Mapping[str, Row],
    reservations: Iterable[Row], verdict: Verdict,
) -> None:  # fmt: skip
    """Per product: stock taken = units of confirmed orders (+ pending/cancelled still held)."""
    active = {r["order_id"] for r in reservations if r["status"] == "active"}
    expected: Counter[str] = Counter()
    for order_id, row in by_id.items():
        holding = row["status"] in ("cancelled", "pending") and order_id in active
        if row["status"] == "confirmed" or holding:
            for line in _lines(row):
                expected[str(line["product_id"])] += int(line["quantity"])
    for record in stock:
        taken = initial[record["id"]] - record["stock"]
        if taken != expected[record["id"]] or record["stock"] < 0:
            verdict.count(
                "oversold",
                f"stock of {record['id']} is {record['stock']}: taken {taken}, "
                f"held by orders {expected[record['id']]}",
            )


def unreleased(by_id: Mapping[str, Row], reservations: Iterable[Row], verdict: Verdict) -> None:
    """After settling: a cancelled or rejected order must not keep stock held."""
    active = {r["order_id"] for r in reservations if r["status"] == "active"}
    for order_id, row in by_id.items():
        if row["status"] not in ("cancelled", "rejected"):
            continue
        if order_id in active:
            verdict.count("unreleased", f"{row['status']} {order_id} keeps an active reservation")
        elif not row["stock_released"] or row["release_pending"]:
            verdict.count("unreleased", f"cancelled {order_id}: stock not known released")


def still_holding(by_id: Mapping[str, Row], reservations: Iterable[Row]) -> list[str]:
    """Orders settling must wait for: pending, or cancelled/rejected with stock still held."""
    probe = Verdict()
    unreleased(by_id, reservations, probe)
    pending = [order_id for order_id, row in by_id.items() if row["status"] == "pending"]
    return pending + probe.details


def ever_confirmed(load: Load) -> set[str]:
    """Orders some answer showed confirmed (they must have announced orders.order.placed)."""
    return {
        a.order_id
        for a in load.attempts
        if a.order_id is not None and a.status in (200, 201) and a.order_status == "confirmed"
    }


def missing_events(
    by_id: Mapping[str, Row], reservations: Iterable[Row], seen: set[tuple[str, str]],
    confirmed: Collection[str] = (),
) -> set[tuple[str, str]]:  # fmt: skip
    """The events an outside subscriber should have seen but did not."""
    wanted = {
        (EVENT_OF_STATUS[row["status"]], order_id)
        for order_id, row in by_id.items()
        if row["status"] in EVENT_OF_STATUS
    }
    wanted |= {("orders.order.placed", order_id) for order_id in confirmed if order_id in by_id}
    for r in reservations:
        wanted.add(("catalog.stock.reserved", r["id"]))
        if r["status"] == "released":
            wanted.add(("catalog.stock.released", r["id"]))
    return wanted - seen


def _expected(attempt: Attempt) -> bool:
    if attempt.status is None or attempt.status >= 500 or attempt.status == 429:
        return True
    allowed = (EXPECTED_ORDER if attempt.kind == "order" else EXPECTED_CANCEL).get(attempt.status)
    return allowed is not None and (not allowed or attempt.slug in allowed)


def unexpected(load: Load, by_id: Mapping[str, Row], verdict: Verdict) -> None:
    """Answers no well-behaved client should get, and refusals the tables contradict."""
    for attempt in load.attempts:
        if not _expected(attempt):
            verdict.count(
                "unexpected", f"{attempt.kind} {attempt.key} answered {attempt.status} "
                f"{attempt.slug or '?'}",
            )  # fmt: skip
        elif attempt.status == 409 and attempt.slug == "insufficient-stock":
            row = by_id.get(attempt.order_id or "")
            if row is not None and row["status"] != "rejected":
                verdict.count(
                    "unexpected", f"{attempt.order_id} answered insufficient-stock, {row['status']}"
                )
