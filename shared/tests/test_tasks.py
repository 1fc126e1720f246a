"""periodically(): a job runs at its interval inside the block, survives failures, then stops."""

from __future__ import annotations

import asyncio

from bazaar.shared.tasks import periodically


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
