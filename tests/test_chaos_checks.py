"""The chaos soak's checker on crafted data: a broken system must not score zeros.

Fast and without infrastructure: the rows are what the services' tables would hold, the
attempts what the clients would have recorded, the events what the outside queue saw.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bazaar.shared.testing.private import PrivateRedis, free_port, private_workdir, reap

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from chaos_faults import FAULT_NAMES, catalog_of_faults, select  # noqa: E402
from chaos_load import Attempt, Load  # noqa: E402
from chaos_report import achieved, failed, verdict_line  # noqa: E402
from chaos_rules import (  # noqa: E402
    Verdict,
    duplicated,
    ever_confirmed,
    lost,
    missing_events,
    oversold,
    still_holding,
    unexpected,
    unreleased,
)

P = "11111111-0000-0000-0000-000000000001"
ALICE = "alice"


def order(
    oid: str, status: str, key: str, *, qty: int = 1, customer: str = ALICE,
    released: bool | None = None, release_pending: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """A customer_order row; stock counts as released unless confirmed or said otherwise."""
    return {
        "id": oid, "customer_id": customer, "status": status, "idempotency_key": key,
        "lines": json.dumps([{"product_id": P, "quantity": qty}]),
        "stock_released": status != "confirmed" if released is None else released,
        "release_pending": release_pending,
    }  # fmt: skip


def res(rid: str, oid: str, status: str, qty: int = 1) -> dict[str, Any]:
    """A reservation row (one per line)."""
    return {"id": rid, "order_id": oid, "status": status, "product_id": P, "quantity": qty}


def attempt(
    kind: str, key: str, status: int | None, oid: str | None = None, ost: str | None = None,
    slug: str = "",
) -> Attempt:  # fmt: skip
    """What a client recorded of one request."""
    return Attempt(kind, key, 0.0, 0.0, status, slug=slug, order_id=oid, order_status=ost)


def load_of(*attempts: Attempt, keys: tuple[str, ...] = ("k1",)) -> Load:
    """The clients' record: these attempts, every key used by Alice."""
    return Load(attempts=list(attempts), keys=dict.fromkeys(keys, ALICE), seconds=10.0)


def judge(
    load: Load, rows: list[dict[str, Any]], reservations: list[dict[str, Any]], stock_now: int,
    seen: set[tuple[str, str]], initial: int = 100,
) -> tuple[Verdict, set[tuple[str, str]]]:  # fmt: skip
    """Run every check as check() does, without the databases and the broker."""
    verdict = Verdict()
    by_id = {r["id"]: r for r in rows}
    lost(load, by_id, verdict)
    duplicated(load, rows, verdict)
    oversold({P: initial}, [{"id": P, "stock": stock_now}], by_id, reservations, verdict)
    unreleased(by_id, reservations, verdict)
    unexpected(load, by_id, verdict)
    missing = missing_events(by_id, reservations, seen, ever_confirmed(load))
    return verdict, missing


def counters(verdict: Verdict) -> dict[str, int]:
    """The counters that must be zero."""
    names = ("lost", "duplicated", "oversold", "unreleased", "unexpected")
    return {name: getattr(verdict, name) for name in names}


CONFIRMED_SEEN = {("orders.order.placed", "o1"), ("catalog.stock.reserved", "r1")}


def test_a_healthy_run_scores_zeros() -> None:
    load = load_of(
        attempt("order", "k1", 202, "o1", "pending"),
        attempt("order", "k1", 201, "o1", "confirmed"),
        attempt("order", "k2", 409, "o2", slug="insufficient-stock"),
        attempt("order", "k3", 201, "o3", "confirmed"),
        attempt("cancel", "k3", 200, "o3", "cancelled"),
        keys=("k1", "k2", "k3"),
    )
    rows = [order("o1", "confirmed", "k1"), order("o2", "rejected", "k2"),
            order("o3", "cancelled", "k3")]  # fmt: skip
    reservations = [res("r1", "o1", "active"), res("r3", "o3", "released")]
    seen = CONFIRMED_SEEN | {
        ("orders.order.rejected", "o2"), ("orders.order.placed", "o3"),
        ("orders.order.cancelled", "o3"), ("catalog.stock.reserved", "r3"),
        ("catalog.stock.released", "r3"),
    }  # fmt: skip
    verdict, missing = judge(load, rows, reservations, 99, seen)
    assert counters(verdict) == dict.fromkeys(counters(verdict), 0), verdict.details
    assert missing == set()
    assert still_holding({r["id"]: r for r in rows}, reservations) == []


def test_a_cancelled_order_whose_stock_never_comes_back_counts_as_unreleased() -> None:
    load = load_of(attempt("order", "k1", 201, "o1", "confirmed"),
                   attempt("cancel", "k1", 200, "o1", "cancelled"))  # fmt: skip
    rows = [order("o1", "cancelled", "k1", released=False)]
    reservations = [res("r1", "o1", "active")]
    seen = CONFIRMED_SEEN | {("orders.order.cancelled", "o1")}
    verdict, _ = judge(load, rows, reservations, 99, seen)
    assert verdict.unreleased == 1, verdict.details
    assert still_holding({"o1": rows[0]}, reservations), "settling must wait for the release"


def test_a_cancelled_order_not_marked_released_counts_even_if_catalog_released() -> None:
    rows = [order("o1", "cancelled", "k1", released=False, release_pending=True)]
    verdict = Verdict()
    unreleased({"o1": rows[0]}, [res("r1", "o1", "released")], verdict)
    assert verdict.unreleased == 1


def test_a_rejected_order_keeping_an_active_reservation_counts_as_unreleased() -> None:
    load = load_of(attempt("order", "k1", 409, "o1", slug="insufficient-stock"))
    rows = [order("o1", "rejected", "k1")]
    verdict, _ = judge(load, rows, [res("r1", "o1", "active")], 99, set())
    assert verdict.unreleased == 1, verdict.details


@pytest.mark.parametrize("duplicate_first", [True, False])
def test_two_stored_orders_with_one_key_count_as_duplicated_whatever_the_answers_said(
    duplicate_first: bool,
) -> None:
    load = load_of(attempt("order", "k1", 201, "o1", "confirmed"))
    rows = [order("o1", "confirmed", "k1"), order("o2", "rejected", "k1")]
    rows = rows[::-1] if duplicate_first else rows
    verdict, _ = judge(load, rows, [res("r1", "o1", "active")], 99, CONFIRMED_SEEN)
    assert verdict.duplicated >= 1, verdict.details


def test_a_stored_order_under_a_key_no_journey_used_counts_as_duplicated() -> None:
    load = load_of(attempt("order", "k1", 201, "o1", "confirmed"))
    rows = [order("o1", "confirmed", "k1"), order("o2", "rejected", "k-other")]
    verdict, _ = judge(load, rows, [res("r1", "o1", "active")], 99, CONFIRMED_SEEN)
    assert verdict.duplicated == 1, verdict.details


def test_answers_naming_two_orders_for_one_key_count_as_duplicated() -> None:
    load = load_of(attempt("order", "k1", 202, "o1", "pending"),
                   attempt("order", "k1", 201, "o2", "confirmed"))  # fmt: skip
    rows = [order("o2", "confirmed", "k1")]
    seen = {("orders.order.placed", "o2"), ("catalog.stock.reserved", "r2")}
    verdict, _ = judge(load, rows, [res("r2", "o2", "active")], 99, seen)
    assert verdict.duplicated == 1 and verdict.lost == 1, verdict.details


def test_an_order_answered_insufficient_stock_but_stored_confirmed_is_unexpected() -> None:
    load = load_of(attempt("order", "k1", 409, "o1", slug="insufficient-stock"))
    rows = [order("o1", "confirmed", "k1")]
    verdict, _ = judge(load, rows, [res("r1", "o1", "active")], 99, CONFIRMED_SEEN)
    assert verdict.unexpected == 1, verdict.details


@pytest.mark.parametrize(
    ("kind", "status", "slug"),
    [("order", 400, "validation"), ("order", 422, "validation"), ("order", 401, "unauthorized"),
     ("order", 404, "not-found"), ("order", 409, "conflict"), ("order", 200, ""),
     ("cancel", 404, "not-found"), ("cancel", 403, "forbidden"), ("cancel", 201, "")],
)  # fmt: skip
def test_a_wrong_answer_that_is_not_a_5xx_counts_as_unexpected(
    kind: str, status: int, slug: str
) -> None:
    verdict = Verdict()
    unexpected(load_of(attempt(kind, "k1", status, slug=slug)), {}, verdict)
    assert verdict.unexpected == 1


@pytest.mark.parametrize(
    ("kind", "status", "slug"),
    [("order", 409, "idempotency-key-in-use"), ("order", 429, "rate-limited"),
     ("order", 503, "service-unavailable"), ("order", None, ""), ("cancel", 409, "conflict"),
     ("cancel", 200, "")],
)  # fmt: skip
def test_retried_and_expected_answers_are_not_unexpected(
    kind: str, status: int | None, slug: str
) -> None:
    verdict = Verdict()
    unexpected(load_of(attempt(kind, "k1", status, slug=slug)), {}, verdict)
    assert verdict.unexpected == 0


def test_an_order_confirmed_then_cancelled_must_have_announced_its_placement() -> None:
    load = load_of(attempt("order", "k1", 201, "o1", "confirmed"),
                   attempt("cancel", "k1", 200, "o1", "cancelled"))  # fmt: skip
    rows = [order("o1", "cancelled", "k1")]
    seen = {("orders.order.cancelled", "o1"), ("catalog.stock.reserved", "r1"),
            ("catalog.stock.released", "r1")}  # fmt: skip
    _, missing = judge(load, rows, [res("r1", "o1", "released")], 100, seen)
    assert missing == {("orders.order.placed", "o1")}


def test_a_reservation_must_have_announced_catalog_stock_reserved() -> None:
    load = load_of(attempt("order", "k1", 201, "o1", "confirmed"))
    seen = {("orders.order.placed", "o1")}
    _, missing = judge(
        load, [order("o1", "confirmed", "k1")], [res("r1", "o1", "active")], 99, seen
    )
    assert missing == {("catalog.stock.reserved", "r1")}


def test_a_confirmed_order_with_only_a_rejected_event_misses_its_event() -> None:
    load = load_of(attempt("order", "k1", 201, "o1", "confirmed"))
    seen = {("orders.order.rejected", "o1"), ("catalog.stock.reserved", "r1")}
    _, missing = judge(
        load, [order("o1", "confirmed", "k1")], [res("r1", "o1", "active")], 99, seen
    )
    assert missing == {("orders.order.placed", "o1")}


def test_negative_stock_counts_as_oversold_even_when_orders_match_it() -> None:
    load = load_of(attempt("order", "k1", 201, "o1", "confirmed"))
    rows = [order("o1", "confirmed", "k1", qty=105)]
    verdict, _ = judge(load, rows, [res("r1", "o1", "active", 105)], -5, CONFIRMED_SEEN)
    assert verdict.oversold == 1, verdict.details


def test_a_confirmed_order_whose_stock_came_back_counts_as_oversold() -> None:
    load = load_of(attempt("order", "k1", 201, "o1", "confirmed"))
    rows = [order("o1", "confirmed", "k1")]
    verdict, _ = judge(load, rows, [res("r1", "o1", "released")], 100, CONFIRMED_SEEN)
    assert verdict.oversold == 1, verdict.details


def test_an_order_an_answer_named_but_not_stored_counts_as_lost() -> None:
    verdict, _ = judge(load_of(attempt("order", "k1", 201, "o9", "confirmed")), [], [], 100, set())
    assert verdict.lost == 1, verdict.details


def test_unfinished_journeys_and_unexpected_answers_fail_the_soak() -> None:
    load = load_of()
    assert not failed(Verdict(), load, 1.0)
    load.unfinished = 1
    assert failed(Verdict(), load, 1.0)
    assert failed(Verdict(unexpected=1), load_of(), 1.0)
    assert failed(Verdict(unreleased=1), load_of(), 1.0)
    assert failed(Verdict(), load_of(), 3.5)


def test_the_verdict_line_keeps_the_issues_names_first_and_shows_other_5xx_apart() -> None:
    load = load_of(attempt("order", "k1", 503), attempt("order", "k1", 502),
                   attempt("order", "k1", 201, "o1", "confirmed"))  # fmt: skip
    line = verdict_line(Verdict(orders=1), load, 0.5)
    assert line.startswith(
        "chaos: orders=1 lost=0 duplicated=0 oversold=0 stuck_pending=0 events_missing=0 "
        "http500=0 max_recovery_s=0.50 "
    )
    assert line.endswith("unreleased=0 unexpected=0 unfinished=0 http5xx_other=2")
    assert not failed(Verdict(), load, 0.5), "5xx other than 500 are informational"


def test_the_achieved_rate_counts_journeys_with_a_final_answer() -> None:
    load = load_of(attempt("order", "k1", 503), attempt("order", "k1", 201, "o1", "confirmed"),
                   attempt("order", "k2", 409, "o2", slug="insufficient-stock"),
                   attempt("order", "k3", 409, slug="idempotency-key-in-use"))  # fmt: skip
    rate = achieved(load)
    assert (rate.answered, rate.placed) == (0.2, 0.1)


def test_only_with_a_word_naming_no_fault_selects_nothing() -> None:
    class Server:
        def restart(self, down_seconds: float) -> None:
            """Never called here."""

    servers = {name: Server() for name in ("postgres", "redis", "rabbitmq")}
    faults = catalog_of_faults(None, servers, 1.0, 8.0)  # type: ignore[arg-type]
    assert len(faults) == len(FAULT_NAMES) == 7
    assert all(select(faults, name) for name in FAULT_NAMES)
    assert select(faults, "redsi") == []
    assert [name for name, _ in select(faults, "redis,sigstop")] == [
        "SIGSTOP catalog 8 s", "restart Redis"
    ]  # fmt: skip


def test_the_soak_refuses_an_only_that_names_no_fault_before_starting_anything() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--short", "--only", "redsi"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "names none of the faults" in done.stderr


def test_free_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(20000 <= port < low for port in ports)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_reap_ends_a_private_server_whose_owner_died_and_stops_nothing_else() -> None:
    work = private_workdir("bazaar-reap-test-")
    redis = PrivateRedis(work)
    try:
        redis.start()
        assert redis.process is not None
        assert reap(work) == [str(work / "redis")]
        assert redis.process.wait(10) == -signal.SIGKILL
        assert reap(work) == [], "an ended session is not signalled again"
    finally:
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
