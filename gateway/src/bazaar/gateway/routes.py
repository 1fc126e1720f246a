"""The route table: which upstream serves a request, and under which rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bazaar.gateway.config import RouteConfig


@dataclass(frozen=True, slots=True)
class Route:
    """A matched route (the configuration, with a stable label for metrics)."""

    config: RouteConfig
    label: str


def _matches(prefix: str, path: str) -> bool:
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


class RouteTable:
    """Routes in order; the first whose prefix and method match wins."""

    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        self._routes = [
            Route(r, f"{','.join(r.methods) if r.methods else '*'} {r.prefix}") for r in routes
        ]

    def match(self, method: str, path: str) -> Route | None:
        """The route for this request, or None (the gateway answers 404)."""
        for route in self._routes:
            methods = route.config.methods
            if (methods is None or method in methods) and _matches(route.config.prefix, path):
                return route
        return None
