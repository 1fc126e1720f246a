"""The route table: which upstream serves a request, and under which rules."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bazaar.gateway.config import RouteConfig


@dataclass(frozen=True, slots=True)
class Route:
    """A matched route: its configuration, and its `http_route` in metrics, logs and spans."""

    config: RouteConfig
    #: The public path template the route serves (its prefix), never the method.
    label: str


_SEGMENT = re.compile(r"\{[^{}/]+\}")


def _matcher(prefix: str) -> Callable[[str], bool]:
    """Whether a path falls under `prefix`: the prefix itself or below it (a prefix ending
    in `/`: below it only); each `{name}` segment of the prefix matches one segment."""
    if "{" in prefix:
        parts = _SEGMENT.split(prefix)
        pattern = "[^/]+".join(re.escape(part) for part in parts)
        tail = "" if prefix.endswith("/") else "(?:/|$)"
        match = re.compile(pattern + tail).match
        return lambda path: match(path) is not None
    if prefix.endswith("/"):
        return lambda path: path.startswith(prefix)
    below = prefix + "/"
    return lambda path: path == prefix or path.startswith(below)


class RouteTable:
    """Routes in order; the first whose prefix and method match wins."""

    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        self._routes = [(Route(r, r.prefix), r.methods, _matcher(r.prefix)) for r in routes]

    def match(self, method: str, path: str) -> Route | None:
        """The route for this request, or None (the gateway answers 404)."""
        for route, methods, matches in self._routes:
            if (methods is None or method in methods) and matches(path):
                return route
        return None
