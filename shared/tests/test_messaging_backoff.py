"""Reconnect and retry loops pause with jitter, so replicas do not come back in lockstep."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging

import aiormq
import pytest
from yarl import URL

from bazaar.shared.backoff import Backoff
from bazaar.shared.messaging.connection import CONNECT_MAX_PAUSE, RECONNECT_SECONDS, Broker


def test_pauses_are_random_below_a_doubling_bound_capped_and_short_again_after_a_reset() -> None:
    backoffs = [Backoff(0.5, 4.0) for _ in range(50)]
    rounds = [[b.next() for b in backoffs] for _ in range(6)]
    for n, pauses in enumerate(rounds):
        assert all(0 <= p <= min(4.0, 0.5 * 2**n) for p in pauses)
        assert len(set(pauses)) > 40  # fifty replicas, fifty different pauses
    assert max(rounds[-1]) > 2.0  # the bound grew to the cap
    for b in backoffs:
        b.reset()
    assert all(b.next() <= 0.5 for b in backoffs)


async def test_the_first_broker_connection_retries_with_jittered_pauses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = Broker("amqp://guest:guest@127.0.0.1:1/", name="nowhere")  # refused at once
    with caplog.at_level(logging.WARNING, "bazaar.messaging"), contextlib.suppress(TimeoutError):
        await asyncio.wait_for(broker.connect(), 3.0)
    tries = [r.created for r in caplog.records if "broker unreachable" in r.getMessage()]
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert len(gaps) >= 3
    assert all(gap <= CONNECT_MAX_PAUSE + 0.1 for gap in gaps)
    assert max(gaps) - min(gaps) > 0.05  # not one fixed interval


async def test_the_robust_connection_reconnects_after_jittered_pauses(amqp_url: str) -> None:
    broker = Broker(amqp_url, name="jitter")
    connection = await broker.connect()
    try:
        pauses = [connection.reconnect_interval for _ in range(50)]
    finally:
        await broker.close()
    assert all(0.5 * RECONNECT_SECONDS <= p <= 1.5 * RECONNECT_SECONDS for p in pauses)
    assert len(set(pauses)) > 40


async def test_the_aiormq_state_is_blocked_reads_still_exists() -> None:
    # Broker.is_blocked reads aiormq's private "unblocked" event (no public accessor); an
    # upgrade renaming it would make a blocked broker read as never blocked.
    connection = aiormq.Connection(URL("amqp://guest:guest@127.0.0.1:1/"))
    unblocked = getattr(connection, "_Connection__connection_unblocked", None)
    assert isinstance(unblocked, asyncio.Event)
