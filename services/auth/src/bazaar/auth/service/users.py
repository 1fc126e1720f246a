"""User use cases: register, read, list, change roles; bootstrap the admin."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from bazaar.auth.domain.errors import EmailTaken, NotAUser, UserNotFound
from bazaar.auth.domain.model import NewUser, User, new_user_id
from bazaar.auth.service.ports import Passwords, UnitsOfWork


def registered_event_data(user: User) -> dict[str, object]:
    """The payload of auth.user.registered (API.md)."""
    return {"user_id": user.id, "email": user.email, "name": user.name}


async def register_user(
    new: NewUser, password: str, *, uows: UnitsOfWork, passwords: Passwords
) -> User:
    """Create an account and announce it; the hash is made before the transaction opens."""
    password_hash = await passwords.hash(password)
    async with uows() as uow:
        user = await uow.users.add(new_user_id(), new, password_hash)
        await uow.events.add(
            "auth.user.registered", subject=str(user.id), data=registered_event_data(user)
        )
    return user


async def get_user(user_id: UUID, *, uows: UnitsOfWork) -> User:
    """The user, or UserNotFound."""
    async with uows() as uow:
        user = await uow.users.get(user_id)
    if user is None:
        raise UserNotFound(f"User {user_id} does not exist.")
    return user


async def current_user(
    subject: str, client_id: str | None, *, public_client_id: str, uows: UnitsOfWork
) -> User:
    """The user a token speaks for; a token issued to a service client is NotAUser."""
    # Users' tokens are issued to the public client; a service's name its own client id.
    if client_id != public_client_id:
        raise NotAUser("This token belongs to a service client, not a user.")
    try:
        user_id = UUID(subject)
    except ValueError:
        raise NotAUser("This token does not name a user.") from None
    async with uows() as uow:
        user = await uow.users.get(user_id)
    if user is None:
        raise NotAUser("This token's user no longer exists.")
    return user


async def list_users(
    *, limit: int, after: tuple[datetime, UUID] | None, uows: UnitsOfWork
) -> list[User]:
    """Up to `limit` users, newest first, after a keyset position."""
    async with uows() as uow:
        return await uow.users.list(limit=limit, after=after)


async def set_roles(user_id: UUID, roles: Sequence[str], *, uows: UnitsOfWork) -> User:
    """Replace a user's roles (their next token carries the new scopes)."""
    async with uows() as uow:
        user = await uow.users.set_roles(user_id, sorted(set(roles)))
    if user is None:
        raise UserNotFound(f"User {user_id} does not exist.")
    return user


async def ensure_admin(
    email: str, name: str, password: str, *, uows: UnitsOfWork, passwords: Passwords
) -> bool:
    """Create the bootstrap admin unless an account with that email exists; True if created."""
    async with uows() as uow:
        if await uow.users.get_by_email(email) is not None:
            return False
    try:
        await register_user(
            NewUser(email, name, ("admin",)), password, uows=uows, passwords=passwords
        )
    except EmailTaken:  # another replica made it first
        return False
    return True
