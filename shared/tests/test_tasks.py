"""periodically(): a job runs at its interval inside the block, survives failures, then stops."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from bazaar.shared.dbfailure import DatabaseBusy
from bazaar.shared.tasks import cancel_and_wait, periodically, wait_at_most


async def test_a_job_runs_repeatedly_survives_failures_and_stops_with_the_block() -> None:
    runs = 0
    enough = asyncio.Event()

    async def job() -> int:
        nonlocal runs
        runs += 1
        if runs >= 4:
            enough.set()
        if runs == 2:
            raise RuntimeError("a bad turn")
        return runs

    async with periodically(0.01, job, name="test job"):
        await asyncio.wait_for(enough.wait(), 5)
    stopped_at = runs
    await asyncio.sleep(0.05)

    assert stopped_at >= 4
    assert runs == stopped_at, "no run after the block ended"


async def test_a_job_failing_because_the_database_is_out_logs_one_warning_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    runs = 0
    enough = asyncio.Event()

    async def job() -> int:
        nonlocal runs
        runs += 1
        if runs >= 5:
            enough.set()
        raise DatabaseBusy("too many connections")

    async with periodically(0.01, job, name="purge keys"):
        await asyncio.wait_for(enough.wait(), 5)

    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [r for r in caplog.records if r.exc_info] == []
    lines = [r for r in caplog.records if "database unavailable" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.WARNING
    assert "purge keys" in lines[0].getMessage()


async def test_wait_at_most_answers_whether_the_event_came_in_time() -> None:
    event = asyncio.Event()
    assert await wait_at_most(event, 0.05) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_at_most(event, 5) is True


async def test_a_cancellation_arriving_with_the_event_is_never_swallowed() -> None:
    # asyncio.wait_for on Python 3.11 returns normally here (CPython gh-86296): a loop
    # built on it, as the outbox relay's, then never stops when its task is cancelled.
    for _ in range(20):
        event = asyncio.Event()
        waiter = asyncio.create_task(wait_at_most(event, 10))
        await asyncio.sleep(0)  # the waiter is waiting
        event.set()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter


async def test_a_routine_periodic_job_logs_its_turns_at_the_level_it_asks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    turns = 0
    third = asyncio.Event()

    async def job() -> int:
        nonlocal turns
        turns += 1
        if turns % 3 == 0:
            third.set()
        return turns

    caplog.set_level(logging.DEBUG, logger="bazaar")
    async with periodically(0.01, job, name="routine", done_level=logging.DEBUG):
        await asyncio.wait_for(third.wait(), 30)
    third.clear()
    async with periodically(0.01, job, name="reported"):
        await asyncio.wait_for(third.wait(), 30)

    done = [(r.getMessage(), r.levelno) for r in caplog.records if r.getMessage().endswith("done")]
    assert {level for message, level in done if message == "routine done"} == {logging.DEBUG}
    assert {level for message, level in done if message == "reported done"} == {logging.INFO}


async def _swallowing_one_cancellation(ran: list[str]) -> None:
    """A loop that, like a broker call on a broken connection, turns one cancellation into
    an error it survives and goes on."""
    swallowed = False
    while True:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True
            ran.append("swallowed")


async def test_cancel_and_wait_ends_a_task_that_swallowed_its_first_cancellation() -> None:
    ran: list[str] = []
    task = asyncio.create_task(_swallowing_one_cancellation(ran))
    await asyncio.sleep(0.01)
    async with asyncio.timeout(5):  # a single cancel() and an await would wait for ever
        await cancel_and_wait(task, again_after=0.2)
    assert task.cancelled()
    assert ran == ["swallowed"]


async def test_a_periodic_job_swallowing_a_cancellation_still_stops_with_the_block() -> None:
    ran: list[str] = []

    async def job() -> None:
        await _swallowing_one_cancellation(ran)

    started = time.monotonic()
    async with asyncio.timeout(5):
        async with periodically(0.01, job, name="swallower"):
            await asyncio.sleep(0.1)  # the job is running: its first turn never ends
    # Within the re-cancel interval, not at the 5 s timeout (whose own cancellation a
    # suppressed CancelledError around `await task` used to swallow as well).
    assert time.monotonic() - started < 3
    assert ran == ["swallowed"]
