"""In-memory fakes of the auth ports (same Protocols as the SQL adapters), and their fixtures."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from bazaar.auth.domain.errors import EmailTaken
from bazaar.auth.domain.model import NewUser, RefreshToken, ServiceClient, User, email_key
from bazaar.auth.service.tokens import TokenPolicy


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class State:
    """Everything the fake database holds."""

    users: dict[UUID, User] = field(default_factory=dict)
    clients: dict[str, ServiceClient] = field(default_factory=dict)
    refresh: dict[bytes, RefreshToken] = field(default_factory=dict)
    throttle: dict[str, tuple[int, datetime | None]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)


class FakeUsers:
    def __init__(self, state: State) -> None:
        self.state = state

    async def add(self, user_id: UUID, new: NewUser, password_hash: str) -> User:
        if any(email_key(u.email) == email_key(new.email) for u in self.state.users.values()):
            raise EmailTaken("An account with this email already exists.")
        now = _now()
        user = User(user_id, new.email, new.name, tuple(new.roles), password_hash, now, now)
        self.state.users[user_id] = user
        return user

    async def get(self, user_id: UUID) -> User | None:
        return self.state.users.get(user_id)

    async def get_by_email(self, email: str) -> User | None:
        return next(
            (u for u in self.state.users.values() if u.email.lower() == email.lower()), None
        )

    async def list(self, *, limit: int, after: tuple[datetime, UUID] | None) -> list[User]:
        users = sorted(self.state.users.values(), key=lambda u: (u.created_at, u.id), reverse=True)
        if after is not None:
            users = [u for u in users if (u.created_at, u.id) < after]
        return users[:limit]

    async def set_roles(self, user_id: UUID, roles: Sequence[str]) -> User | None:
        user = self.state.users.get(user_id)
        if user is None:
            return None
        self.state.users[user_id] = replace(user, roles=tuple(roles), updated_at=_now())
        return self.state.users[user_id]

    async def set_password_hash(self, user_id: UUID, password_hash: str) -> None:
        self.state.users[user_id] = replace(self.state.users[user_id], password_hash=password_hash)


class FakeClients:
    def __init__(self, state: State) -> None:
        self.state = state

    async def get(self, client_id: str) -> ServiceClient | None:
        return self.state.clients.get(client_id)

    async def put(self, client_id: str, secret_hash: str, scopes: Iterable[str]) -> None:
        self.state.clients[client_id] = ServiceClient(client_id, secret_hash, frozenset(scopes))

    async def remove_all_but(self, client_ids: Iterable[str]) -> None:
        keep = set(client_ids)
        for client_id in [c for c in self.state.clients if c not in keep]:
            del self.state.clients[client_id]


class FakeRefreshTokens:
    def __init__(self, state: State) -> None:
        self.state = state

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
    ) -> None:
        self.state.refresh[digest] = RefreshToken(
            token_id, family_id, user_id, client_id, scope, _now() + lifetime, None, None
        )

    async def find(self, digest: bytes) -> RefreshToken | None:
        return self.state.refresh.get(digest)

    async def lock_family(self, family_id: UUID) -> None:
        return None

    async def get_for_update(self, digest: bytes) -> RefreshToken | None:
        return self.state.refresh.get(digest)

    async def mark_used(self, token_id: UUID) -> None:
        for digest, stored in self.state.refresh.items():
            if stored.id == token_id:
                self.state.refresh[digest] = replace(stored, used_at=_now())

    async def revoke_family(self, family_id: UUID) -> None:
        for digest, stored in self.state.refresh.items():
            if stored.family_id == family_id and stored.revoked_at is None:
                self.state.refresh[digest] = replace(stored, revoked_at=_now())

    async def purge_expired(self, margin: timedelta) -> int:
        stale = [d for d, t in self.state.refresh.items() if t.expires_at < _now() - margin]
        for digest in stale:
            del self.state.refresh[digest]
        return len(stale)


class FakeThrottle:
    def __init__(self, state: State) -> None:
        self.state = state

    async def record_attempt(self, email_key: str) -> tuple[int, bool]:
        attempts, blocked_until = self.state.throttle.get(email_key, (0, None))
        if blocked_until is not None and blocked_until > _now():
            return attempts, True  # refused attempts are not counted
        self.state.throttle[email_key] = (attempts + 1, blocked_until)
        return attempts + 1, False

    async def block(self, email_key: str, wait: timedelta) -> None:
        failures, _ = self.state.throttle[email_key]
        self.state.throttle[email_key] = (failures, _now() + wait)

    async def clear(self, email_key: str) -> None:
        self.state.throttle.pop(email_key, None)

    async def purge(self) -> int:
        return 0


class FakeEvents:
    def __init__(self, state: State) -> None:
        self.state = state

    async def add(self, type: str, *, subject: str, data: Any) -> dict[str, Any]:
        event = {"type": type, "subject": subject, "data": data}
        self.state.events.append(event)
        return event


class FakeUnitOfWork:
    def __init__(self, state: State) -> None:
        self.users = FakeUsers(state)
        self.clients = FakeClients(state)
        self.refresh_tokens = FakeRefreshTokens(state)
        self.throttle = FakeThrottle(state)
        self.events = FakeEvents(state)


class FakeUnitsOfWork:
    """Each unit works on a copy of the state that replaces it only when the block succeeds."""

    def __init__(self) -> None:
        self.state = State()
        self.commits = 0

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[FakeUnitOfWork]:
        working = copy.deepcopy(self.state)
        yield FakeUnitOfWork(working)
        self.state = working
        self.commits += 1


class FakePasswords:
    """`scheme$password` hashes; a hash of another scheme needs rehashing. Records verifications."""

    def __init__(self, scheme: str = "v2") -> None:
        self.scheme = scheme
        self.verified: list[str | None] = []

    async def hash(self, password: str) -> str:
        return f"{self.scheme}${password}"

    async def verify(self, password_hash: str | None, password: str) -> bool:
        self.verified.append(password_hash)
        if password_hash is None:
            return False
        return password_hash.split("$", 1)[1] == password

    def needs_rehash(self, password_hash: str) -> bool:
        return not password_hash.startswith(self.scheme + "$")


class FakeSigner:
    """Signs nothing: the 'token' is the claims as JSON, and every claim set is kept."""

    def __init__(self) -> None:
        self.signed: list[dict[str, Any]] = []

    async def sign(self, claims: Mapping[str, Any]) -> str:
        self.signed.append(dict(claims))
        return json.dumps(dict(claims))


@pytest.fixture
def uows() -> FakeUnitsOfWork:
    """An empty fake database."""
    return FakeUnitsOfWork()


@pytest.fixture
def passwords() -> FakePasswords:
    """Fast fake password hashing."""
    return FakePasswords()


@pytest.fixture
def signer() -> FakeSigner:
    """A signer that keeps the claims."""
    return FakeSigner()


@pytest.fixture
def policy() -> TokenPolicy:
    """A token policy with a low failure threshold."""
    return TokenPolicy(
        issuer="https://issuer.test",
        audience="bazaar",
        access_ttl=timedelta(minutes=15),
        refresh_ttl=timedelta(days=30),
        public_client_id="bazaar-web",
        failures_before_delay=3,
        max_delay_seconds=60,
    )
