"""Who is calling: the verified identity a request carries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller behind an access token."""

    subject: str
    scopes: frozenset[str]
    client_id: str | None
    # Kept for forwarding to upstream services, but out of repr so logging a principal
    # never writes a bearer token into the logs.
    token: str = field(repr=False)
    claims: Mapping[str, Any] = field(repr=False)

    def has_scopes(self, *required: str) -> bool:
        """Tell whether every one of the required scopes was granted."""
        return self.scopes.issuperset(required)
