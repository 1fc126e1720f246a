"""Slowing down guessing: how long an account must wait after repeated failed logins."""

from __future__ import annotations

from datetime import timedelta

#: Failures older than this are forgotten: a user who mistyped yesterday starts afresh.
FAILURE_MEMORY = timedelta(minutes=15)


def wait_after(failures: int, *, threshold: int, max_seconds: int) -> timedelta | None:
    """The wait imposed after `failures` consecutive failures: doubling past the threshold."""
    if failures < threshold:
        return None
    return timedelta(seconds=min(2 ** (failures - threshold), max_seconds))
