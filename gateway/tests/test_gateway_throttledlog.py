"""A throttled warning: the first at once, then one line per interval counting the rest,
labelled with the time they really took, the tail logged when the interval ends."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bazaar.gateway.throttledlog import ThrottledWarning


def test_repeats_within_the_interval_are_counted_into_the_next_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    warning = ThrottledWarning(logging.getLogger("t"), interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t"):
        for _ in range(50):
            warning.warn("refused %s", "x")
        now[0] += 10.0
        warning.warn("refused %s", "y")
    assert [r.getMessage() for r in caplog.records] == [
        "refused x (1 time(s) in 0.0 s)",
        "refused y (50 time(s) in 10.0 s)",
    ]


def test_the_line_says_how_long_the_occurrences_it_counts_really_took(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    warning = ThrottledWarning(logging.getLogger("t"), interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t"):
        warning.warn("refused")
        for i in range(871):  # a burst over 4 s, then nothing
            now[0] = 100.5 + 4.0 * i / 870
            warning.warn("refused")
        now[0] = 130.0
        warning.flush()  # at shutdown
        warning.flush()  # nothing left to say
    assert [r.getMessage() for r in caplog.records] == [
        "refused (1 time(s) in 0.0 s)",
        "refused (871 time(s) in 4.0 s)",
    ]


async def test_a_bursts_tail_is_logged_when_the_interval_ends_without_another_occurrence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    warning = ThrottledWarning(logging.getLogger("t"), interval=0.2)
    with caplog.at_level(logging.WARNING, logger="t"):
        for _ in range(5):
            warning.warn("refused")
        await asyncio.sleep(0.5)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[1].startswith("refused (4 time(s) in "), messages
