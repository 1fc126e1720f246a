"""The token grants of RFC 6749 (password, refresh_token, client_credentials) and revocation."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from bazaar.auth.domain.errors import InvalidClient, InvalidGrant
from bazaar.auth.domain.model import (
    MAX_EMAIL,
    RefreshToken,
    email_key,
    new_refresh_token,
    secret_matches,
    token_digest,
)
from bazaar.auth.domain.scopes import format_scope, narrow, parse_scope, scopes_for_roles
from bazaar.auth.domain.throttle import wait_after
from bazaar.auth.service.ports import Passwords, Signer, UnitOfWork, UnitsOfWork

#: Compared against when a client id is unknown, so both paths cost the same.
_NO_CLIENT_DIGEST = token_digest("no such client").hex()
_BAD_CREDENTIALS = "The username or password is incorrect."


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    """Who signs tokens and for how long they live."""

    issuer: str
    audience: str
    access_ttl: timedelta
    refresh_ttl: timedelta
    public_client_id: str
    failures_before_delay: int
    max_delay_seconds: int


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    """A successful token response (RFC 6749 §5.1)."""

    access_token: str
    expires_in: int
    scope: str
    refresh_token: str | None = None


async def _access_token(
    subject: str, scopes: frozenset[str], client_id: str, *, signer: Signer, policy: TokenPolicy
) -> str:
    now = int(time.time())
    claims = {
        "iss": policy.issuer,
        "aud": policy.audience,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + int(policy.access_ttl.total_seconds()),
        "jti": str(uuid.uuid4()),
        "scope": format_scope(scopes),
        "client_id": client_id,
    }
    return await signer.sign(claims)


async def _new_refresh(
    uow: UnitOfWork, *, family_id: UUID, user_id: UUID, scope: str, policy: TokenPolicy
) -> str:
    token = new_refresh_token()
    await uow.refresh_tokens.add(
        uuid.uuid4(),
        token_digest(token),
        family_id=family_id,
        user_id=user_id,
        client_id=policy.public_client_id,
        scope=scope,
        lifetime=policy.refresh_ttl,
    )
    return token


async def _locked_token(uow: UnitOfWork, digest: bytes) -> RefreshToken | None:
    """The token, read again under its family's lock and its own row lock.

    The family lock comes first (the family is only known after a plain read), so a
    refresh and a revocation of one family run one after the other and never deadlock.
    """
    found = await uow.refresh_tokens.find(digest)
    if found is None:
        return None
    await uow.refresh_tokens.lock_family(found.family_id)
    return await uow.refresh_tokens.get_for_update(digest)


async def password_grant(
    username: str,
    password: str,
    requested: str | None,
    *,
    uows: UnitsOfWork,
    passwords: Passwords,
    signer: Signer,
    policy: TokenPolicy,
) -> IssuedTokens:
    """Log a user in; unknown user, wrong password and a throttled account answer alike.

    Each attempt is counted before the password is checked, in one atomic statement, so
    parallel guesses cannot all slip past the threshold: after it, an attempt is checked
    only once the previous block has passed, and each allowed attempt blocks the next.
    """
    key = email_key(username)
    if len(key) > MAX_EMAIL:
        raise InvalidGrant(_BAD_CREDENTIALS)  # no account can have it; nothing to count
    async with uows() as uow:
        attempts, blocked = await uow.throttle.record_attempt(key)
        if not blocked:
            wait = wait_after(
                attempts,
                threshold=policy.failures_before_delay,
                max_seconds=policy.max_delay_seconds,
            )
            if wait is not None:
                await uow.throttle.block(key, wait)
        user = None if blocked else await uow.users.get_by_email(username)
    if blocked:
        raise InvalidGrant(_BAD_CREDENTIALS)
    # Verified outside any transaction: hashing takes tens of milliseconds.
    matches = await passwords.verify(user.password_hash if user else None, password)
    if user is None or not matches:
        raise InvalidGrant(_BAD_CREDENTIALS)
    granted = narrow(parse_scope(requested), scopes_for_roles(user.roles))
    new_hash = (
        await passwords.hash(password) if passwords.needs_rehash(user.password_hash) else None
    )
    async with uows() as uow:
        await uow.throttle.clear(key)
        if new_hash is not None:
            await uow.users.set_password_hash(user.id, new_hash)
        refresh = await _new_refresh(
            uow,
            family_id=uuid.uuid4(),
            user_id=user.id,
            scope=format_scope(granted),
            policy=policy,
        )
    access = await _access_token(
        str(user.id), granted, policy.public_client_id, signer=signer, policy=policy
    )
    return IssuedTokens(access, _seconds(policy.access_ttl), format_scope(granted), refresh)


async def refresh_grant(
    refresh_token: str,
    requested: str | None,
    *,
    uows: UnitsOfWork,
    signer: Signer,
    policy: TokenPolicy,
) -> IssuedTokens:
    """Exchange a refresh token for a new pair; a spent one revokes its whole family."""
    async with uows() as uow:
        stored = await _locked_token(uow, token_digest(refresh_token))
        if stored is None:
            raise InvalidGrant("The refresh token is invalid.")
        user = None if stored.is_spent() else await uow.users.get(stored.user_id)
        if stored.is_spent():
            # Someone replays a token already exchanged: one of the two holders stole it.
            # Revoke the family (the successor too); leaving the block commits that.
            await uow.refresh_tokens.revoke_family(stored.family_id)
        elif stored.expires_at <= datetime.now(UTC) or user is None:
            raise InvalidGrant("The refresh token is invalid or expired.")
        else:
            # The user's current roles bound what an old grant may still give.
            allowed = frozenset(stored.scope.split()) & scopes_for_roles(user.roles)
            granted = narrow(parse_scope(requested), allowed)
            await uow.refresh_tokens.mark_used(stored.id)
            refresh = await _new_refresh(
                uow,
                family_id=stored.family_id,
                user_id=user.id,
                scope=stored.scope,
                policy=policy,
            )
    if user is None:
        raise InvalidGrant("The refresh token was already used; its family is revoked.")
    access = await _access_token(
        str(user.id), granted, stored.client_id, signer=signer, policy=policy
    )
    return IssuedTokens(access, _seconds(policy.access_ttl), format_scope(granted), refresh)


async def client_credentials_grant(
    client_id: str,
    client_secret: str,
    requested: str | None,
    *,
    uows: UnitsOfWork,
    signer: Signer,
    policy: TokenPolicy,
) -> IssuedTokens:
    """Issue a service token to an authenticated client (no refresh token)."""
    async with uows() as uow:
        client = await uow.clients.get(client_id)
    stored = client.secret_hash if client else _NO_CLIENT_DIGEST
    if not secret_matches(client_secret, stored) or client is None:
        raise InvalidClient("Client authentication failed.")
    granted = narrow(parse_scope(requested), client.scopes)
    access = await _access_token(client_id, granted, client_id, signer=signer, policy=policy)
    return IssuedTokens(access, _seconds(policy.access_ttl), format_scope(granted))


async def revoke(token: str, *, uows: UnitsOfWork) -> None:
    """Revoke a refresh token's family (RFC 7009); anything else is silently accepted."""
    async with uows() as uow:
        stored = await _locked_token(uow, token_digest(token))
        if stored is not None:
            await uow.refresh_tokens.revoke_family(stored.family_id)


async def configure_clients(
    clients: Iterable[tuple[str, str, tuple[str, ...]]], *, uows: UnitsOfWork
) -> None:
    """Make the stored service clients exactly those configured (secrets kept as digests).

    A client removed from the settings stops working at the next start: that is how a
    leaked client is retired.
    """
    configured = list(clients)
    async with uows() as uow:
        for client_id, secret, scopes in configured:
            await uow.clients.put(client_id, token_digest(secret).hex(), scopes)
        await uow.clients.remove_all_but(client_id for client_id, _, _ in configured)


#: Expired refresh tokens are kept this long, then deleted.
EXPIRED_TOKEN_MARGIN = timedelta(days=1)


async def purge_stale(*, uows: UnitsOfWork) -> dict[str, int]:
    """Delete expired refresh tokens and forgotten login failures; return the counts."""
    async with uows() as uow:
        tokens = await uow.refresh_tokens.purge_expired(EXPIRED_TOKEN_MARGIN)
        failures = await uow.throttle.purge()
    return {"refresh_tokens": tokens, "login_throttle": failures}


def _seconds(delta: timedelta) -> int:
    return int(delta.total_seconds())
