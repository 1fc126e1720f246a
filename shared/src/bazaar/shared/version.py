"""The version a process reports (`/version`, logs, traces, `bazaar_build_info`): one source."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version

#: What a process reports when its distribution is not installed (a test's own service).
UNKNOWN_VERSION = "0+unknown"


def distribution_of(service: str) -> str:
    """The distribution a Bazaar process is installed from (`bazaar-catalog`, `bazaar-gateway`)."""
    return f"bazaar-{service}"


@cache
def service_version(service: str) -> str:
    """The installed version of the service's distribution, from its package metadata."""
    try:
        return version(distribution_of(service))
    except PackageNotFoundError:
        return UNKNOWN_VERSION
