"""Users, service clients and refresh tokens, and the rules that shape them."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

#: A pragmatic address check: one @, no spaces, a dot in the domain (RFC 5321 lengths).
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD, MAX_PASSWORD = 12, 128
MAX_EMAIL = 254


@dataclass(frozen=True, slots=True)
class User:
    """A user account (the password hash never leaves the service)."""

    id: UUID
    email: str
    name: str
    roles: tuple[str, ...]
    password_hash: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class NewUser:
    """A validated registration."""

    email: str
    name: str
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ServiceClient:
    """A client of the client-credentials grant."""

    client_id: str
    secret_hash: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class RefreshToken:
    """One refresh token of a family; the token itself is only ever stored hashed."""

    id: UUID
    family_id: UUID
    user_id: UUID
    client_id: str
    scope: str
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None

    def is_spent(self) -> bool:
        """Used or revoked: presenting it again means it leaked."""
        return self.used_at is not None or self.revoked_at is not None


def is_valid_email(email: str) -> bool:
    """Whether the address is plausible (deliverability is not checked)."""
    return len(email) <= MAX_EMAIL and _EMAIL.fullmatch(email) is not None


def email_key(email: str) -> str:
    """The case-insensitive identity of an address."""
    return email.strip().lower()


def new_user_id() -> UUID:
    """A fresh user id."""
    return uuid.uuid4()


def new_refresh_token() -> str:
    """A fresh opaque refresh token (256 random bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    """How a high-entropy token or secret is stored: SHA-256 (a slow hash adds nothing)."""
    return hashlib.sha256(token.encode()).digest()


def secret_matches(secret: str, stored_hex: str) -> bool:
    """Compare a presented secret with its stored digest in constant time."""
    return secrets.compare_digest(token_digest(secret).hex(), stored_hex)
