"""Request and response bodies of the auth API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, Field

from bazaar.auth.domain.model import MAX_PASSWORD, MIN_PASSWORD, User, is_valid_email
from bazaar.shared.schemas import InputModel


def _email(value: str) -> str:
    if not is_valid_email(value):
        raise ValueError("value is not a valid email address")
    return value


Email = Annotated[str, Field(max_length=254), AfterValidator(_email)]
Password = Annotated[str, Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)]
Role = Literal["customer", "admin"]


class UserCreate(InputModel):
    """A registration; roles cannot be chosen (every new account is a customer)."""

    email: Email
    password: Password
    name: Annotated[str, Field(min_length=1, max_length=200)]


class RolesUpdate(InputModel):
    """The roles a user should have from now on."""

    roles: Annotated[list[Role], Field(min_length=1, max_length=2)]


class UserRead(BaseModel):
    """A user (never the password or its hash)."""

    id: UUID
    email: str
    name: str
    roles: list[str]
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserRead:
        """The representation of a domain user."""
        return cls(
            id=user.id,
            email=user.email,
            name=user.name,
            roles=list(user.roles),
            created_at=user.created_at,
        )


class TokenRead(BaseModel):
    """A successful token response (RFC 6749 §5.1)."""

    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the OAuth2 token type, no password
    expires_in: int
    scope: str
    refresh_token: str | None = None


class OAuthErrorRead(BaseModel):
    """An error of the token endpoint (RFC 6749 §5.2)."""

    error: str
    error_description: str | None = None
