"""Scopes and the roles that grant them (API.md, Auth)."""

from __future__ import annotations

from collections.abc import Iterable

from bazaar.auth.domain.errors import InvalidScope

USER_SCOPES = (
    "catalog:read",
    "catalog:write",
    "orders:read",
    "orders:write",
    "orders:admin",
    "users:admin",
)
#: Granted to service clients only, never through a role.
SERVICE_SCOPES = ("catalog:reserve",)
ALL_SCOPES = (*USER_SCOPES, *SERVICE_SCOPES)

ROLE_SCOPES: dict[str, frozenset[str]] = {
    "customer": frozenset({"catalog:read", "orders:read", "orders:write"}),
    "admin": frozenset(USER_SCOPES),
}
DEFAULT_ROLES = ("customer",)


def scopes_for_roles(roles: Iterable[str]) -> frozenset[str]:
    """Every scope the roles grant together."""
    return frozenset().union(*(ROLE_SCOPES.get(role, frozenset()) for role in roles))


def parse_scope(text: str | None) -> frozenset[str] | None:
    """The scopes of a space-separated `scope` parameter; None when it was not sent."""
    if text is None or not text.strip():
        return None
    return frozenset(text.split())


def narrow(requested: frozenset[str] | None, allowed: frozenset[str]) -> frozenset[str]:
    """The scopes to grant: all allowed ones, or the requested subset (else InvalidScope)."""
    if requested is None:
        return allowed
    unknown = requested - allowed
    if unknown:
        raise InvalidScope("The requested scope exceeds what may be granted.")
    return requested


def format_scope(scopes: Iterable[str]) -> str:
    """Scopes as the space-separated string tokens carry (sorted, so stable)."""
    return " ".join(sorted(scopes))
