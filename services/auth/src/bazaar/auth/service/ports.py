"""What the auth use cases need: Protocols the adapters (and test fakes) implement."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from bazaar.auth.domain.model import NewUser, RefreshToken, ServiceClient, User


class Users(Protocol):
    """User storage."""

    async def add(self, user_id: UUID, new: NewUser, password_hash: str) -> User: ...
    async def get(self, user_id: UUID) -> User | None: ...
    async def get_by_email(self, email: str) -> User | None: ...
    async def list(self, *, limit: int, after: tuple[datetime, UUID] | None) -> list[User]: ...
    async def set_roles(self, user_id: UUID, roles: Sequence[str]) -> User | None: ...
    async def set_password_hash(self, user_id: UUID, password_hash: str) -> None: ...


class Clients(Protocol):
    """Service client storage."""

    async def get(self, client_id: str) -> ServiceClient | None: ...
    async def put(self, client_id: str, secret_hash: str, scopes: Iterable[str]) -> None: ...
    async def remove_all_but(self, client_ids: Iterable[str]) -> None: ...


class RefreshTokens(Protocol):
    """Refresh token storage (digests only)."""

    async def add(
        self,
        token_id: UUID,
        digest: bytes,
        *,
        family_id: UUID,
        user_id: UUID,
        client_id: str,
        scope: str,
        lifetime: timedelta,
    ) -> None: ...
    async def find(self, digest: bytes) -> RefreshToken | None: ...
    async def lock_family(self, family_id: UUID) -> None: ...
    async def get_for_update(self, digest: bytes) -> RefreshToken | None: ...
    async def mark_used(self, token_id: UUID) -> None: ...
    async def revoke_family(self, family_id: UUID) -> None: ...
    async def purge_expired(self, margin: timedelta) -> int: ...


class Throttle(Protocol):
    """Failed-login bookkeeping."""

    async def record_attempt(self, email_key: str) -> tuple[int, bool]: ...
    async def block(self, email_key: str, wait: timedelta) -> None: ...
    async def clear(self, email_key: str) -> None: ...
    async def purge(self) -> int: ...


class Events(Protocol):
    """The outbox of the open transaction."""

    async def add(self, type: str, *, subject: str, data: Any) -> dict[str, Any]: ...


class UnitOfWork(Protocol):
    """Everything one step of a use case touches inside one transaction."""

    @property
    def users(self) -> Users: ...
    @property
    def clients(self) -> Clients: ...
    @property
    def refresh_tokens(self) -> RefreshTokens: ...
    @property
    def throttle(self) -> Throttle: ...
    @property
    def events(self) -> Events: ...


#: Opens a unit of work; leaving the `async with` commits it (or rolls back on error).
UnitsOfWork = Callable[[], AbstractAsyncContextManager[UnitOfWork]]


class Passwords(Protocol):
    """Password hashing (slow by design; runs off the event loop)."""

    async def hash(self, password: str) -> str: ...
    async def verify(self, password_hash: str | None, password: str) -> bool: ...
    def needs_rehash(self, password_hash: str) -> bool: ...


class Signer(Protocol):
    """Signs access-token claims with the key that signs now."""

    async def sign(self, claims: Mapping[str, Any]) -> str: ...
