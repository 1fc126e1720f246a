"""The grant use cases over in-memory fakes: what they decide, store and sign."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bazaar.auth.domain.errors import InvalidClient, InvalidGrant, InvalidScope
from bazaar.auth.domain.model import NewUser, token_digest
from bazaar.auth.service import tokens as use
from bazaar.auth.service.tokens import TokenPolicy
from bazaar.auth.service.users import register_user

from .conftest import FakePasswords, FakeSigner, FakeUnitsOfWork

PASSWORD = "correct horse battery"
CUSTOMER = "catalog:read orders:read orders:write"


async def add_user(
    uows: FakeUnitsOfWork, passwords: FakePasswords, email: str = "ada@example.com"
) -> Any:
    return await register_user(
        NewUser(email, "Ada", ("customer",)), PASSWORD, uows=uows, passwords=passwords
    )


async def log_in(
    uows: FakeUnitsOfWork,
    passwords: FakePasswords,
    signer: FakeSigner,
    policy: TokenPolicy,
    username: str = "ada@example.com",
    password: str = PASSWORD,
    scope: str | None = None,
) -> use.IssuedTokens:
    return await use.password_grant(
        username, password, scope, uows=uows, passwords=passwords, signer=signer, policy=policy
    )


async def test_a_login_signs_the_claims_of_api_md_and_stores_only_the_refresh_digest(
    uows: FakeUnitsOfWork, passwords: FakePasswords, signer: FakeSigner, policy: TokenPolicy
) -> None:
    user = await add_user(uows, passwords)

    issued = await log_in(uows, passwords, signer, policy)

    claims = json.loads(issued.access_token)
    assert claims["sub"] == str(user.id)
    assert (claims["iss"], claims["aud"], claims["client_id"]) == (
        "https://issuer.test",
        "bazaar",
        "bazaar-web",
    )
    assert claims["exp"] - claims["iat"] == 900 == issued.expires_in
    assert claims["nbf"] == claims["iat"]
    assert claims["scope"] == CUSTOMER == issued.scope
    assert issued.refresh_token is not None
    assert list(uows.state.refresh) == [token_digest(issued.refresh_token)]


async def test_unknown_user_and_wrong_password_fail_alike_and_both_verify_a_hash(
    uows: FakeUnitsOfWork, passwords: FakePasswords, signer: FakeSigner, policy: TokenPolicy
) -> None:
    await add_user(uows, passwords)

    with pytest.raises(InvalidGrant) as unknown:
        await log_in(uows, passwords, signer, policy, username="nobody@example.com")
    with pytest.raises(InvalidGrant) as wrong:
        await log_in(uows, passwords, signer, policy, password="wrong horse battery")

    assert str(unknown.value) == str(wrong.value)
    assert passwords.verified[0] is None  # the unknown user still costs a verification
    assert len(passwords.verified) == 2
    assert signer.signed == []


async def test_failures_count_for_unknown_accounts_too(
    uows: FakeUnitsOfWork, passwords: FakePasswords, signer: FakeSigner, policy: TokenPolicy
) -> None:
    for _ in range(2):
        with pytest.raises(InvalidGrant):
            await log_in(uows, passwords, signer, policy, username="Ghost@Example.com")

    assert uows.state.throttle["ghost@example.com"][0] == 2


async def test_reaching_the_threshold_blocks_even_the_right_password(
    uows: FakeUnitsOfWork, passwords: FakePasswords, signer: FakeSigner, policy: TokenPolicy
) -> None:
    await add_user(uows, passwords)
    for _ in range(policy.failures_before_delay):
        with pytest.raises(InvalidGrant):
            await log_in(uows, passwords, signer, policy, password="wrong horse battery")

    with pytest.raises(InvalidGrant):
        await log_in(uows, passwords, signer, policy)

    assert signer.signed == []
    attempts, blocked_until = uows.state.throttle["ada@example.com"]
    # The refused attempt is not counted: hammering a blocked account cannot lengthen it.
    assert attempts == policy.failures_before_delay
    assert blocked_until is not None and blocked_until > datetime.now(UTC)


async def test_a_success_clears_the_failures(
    uows: FakeUnitsOfWork, passwords: FakePasswords, signer: FakeSigner, policy: TokenPolicy
) -> None:
    await add_user(uows, passwords)
    with pytest.raises(InvalidGrant):
        await log_in(uows, passwords, signer, policy, password="wrong horse battery")

    await log_in(uows, passwords, signer, policy)

    assert "ada@example.com" not in uows.state.throttle


async def test_a_hash_of_old_parameters_is_replaced_at_login(
    uows: FakeUnitsOfWork, signer: FakeSigner, policy: TokenPolicy
) -> None:
    user = await add_user(uows, FakePasswords(scheme="v1"))
    current = FakePasswords(scheme="v2")

    await log_in(uows, current, signer, policy)

    assert uows.state.users[user.id].password_hash == f"v2${PASSWORD}"


async def test_a_scope_beyond_the_role_is_refused_and_nothing_is_stored(
    uows: FakeUnitsOfWork, passwords: FakePasswords, signer: FakeSigner, policy: TokenPolicy
) -> None:
    await add_user(uows, passwords)

    with pytest.raises(InvalidScope):
        await log_in(uows, passwords, signer, policy, scope="users:admin")

    assert uows.state.refresh == {}


async def test_a_refresh_rotates_within_the_family_and_spends_the_old_token(
    uows: FakeUnitsOfWork, passwords: FakePasswords, signer: FakeSigner, policy: TokenPolicy
) -> None:
    await add_user(uows, passwords)
    first = await log_in(uows, passwords, signer, policy)
    assert first.refresh_token is not None

    second = await use.refresh_grant(
        first.refresh_token, None, uows=uows, signer=signer, policy=policy
    )

    assert second.refresh_token not in (None, first.refresh_token)
    assert second.refresh_token is not None
    old = uows.state.refresh[token_digest(first.refresh_token)]
    new = uows.state.refresh[token_digest(second.refresh_token)]
    assert old.used_at is not None and not new.is_spent()
    assert old.family_id == new.family_id
    assert second.scope == CUSTOMER


async def test_replaying_a_spent_token_revokes_the_whole_family(
    uows: FakeUnitsOfWork, passwords: FakePasswords, signer: FakeSigner, policy: TokenPolicy
) -> None:
    await add_user(uows, passwords)
    first = await log_in(uows, passwords, signer, policy)
    other = await log_in(uows, passwords, signer, policy)
    assert first.refresh_token and other.refresh_token
    second = await use.refresh_grant(
        first.refresh_token, None, uows=uows, signer=signer, policy=policy
    )
    assert second.refresh_token is not None

    with pytest.raises(InvalidGrant):
        await use.refresh_grant(first.refresh_token, None, uows=uows, signer=signer, policy=policy)

    assert uows.state.refresh[token_digest(second.refresh_token)].revoked_at is not None
    assert not uows.state.refresh[token_digest(other.refresh_token)].is_spent()


async def test_an_expired_refresh_token_is_refused_and_stays_unused(
    uows: FakeUnitsOfWork, passwords: FakePasswords, signer: FakeSigner, policy: TokenPolicy
) -> None:
    await add_user(uows, passwords)
    first = await log_in(uows, passwords, signer, policy)
    assert first.refresh_token is not None
    digest = token_digest(first.refresh_token)
    uows.state.refresh[digest] = replace(
        uows.state.refresh[digest], expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )

    with pytest.raises(InvalidGrant):
        await use.refresh_grant(first.refresh_token, None, uows=uows, signer=signer, policy=policy)

    assert uows.state.refresh[digest].used_at is None


async def test_a_refresh_for_a_demoted_user_grants_only_their_current_scopes(
    uows: FakeUnitsOfWork, passwords: FakePasswords, signer: FakeSigner, policy: TokenPolicy
) -> None:
    user = await register_user(
        NewUser("root@example.com", "Root", ("admin",)), PASSWORD, uows=uows, passwords=passwords
    )
    first = await log_in(uows, passwords, signer, policy, username="root@example.com")
    assert first.refresh_token is not None
    async with uows() as uow:
        await uow.users.set_roles(user.id, ["customer"])

    second = await use.refresh_grant(
        first.refresh_token, None, uows=uows, signer=signer, policy=policy
    )

    assert second.scope == CUSTOMER


async def test_client_credentials_issue_a_service_token_without_refresh(
    uows: FakeUnitsOfWork, signer: FakeSigner, policy: TokenPolicy
) -> None:
    await use.configure_clients([("orders", "s3cret", ("catalog:reserve",))], uows=uows)

    issued = await use.client_credentials_grant(
        "orders", "s3cret", None, uows=uows, signer=signer, policy=policy
    )

    assert issued.refresh_token is None
    claims = json.loads(issued.access_token)
    assert (claims["sub"], claims["client_id"], claims["scope"]) == (
        "orders",
        "orders",
        "catalog:reserve",
    )
    assert uows.state.clients["orders"].secret_hash != "s3cret"


@pytest.mark.parametrize(("client_id", "secret"), [("orders", "wrong"), ("nobody", "s3cret")])
async def test_bad_client_credentials_are_invalid_client(
    uows: FakeUnitsOfWork, signer: FakeSigner, policy: TokenPolicy, client_id: str, secret: str
) -> None:
    await use.configure_clients([("orders", "s3cret", ("catalog:reserve",))], uows=uows)

    with pytest.raises(InvalidClient):
        await use.client_credentials_grant(
            client_id, secret, None, uows=uows, signer=signer, policy=policy
        )

    assert signer.signed == []


async def test_revoking_an_unknown_token_is_silent_and_a_known_one_kills_its_family(
    uows: FakeUnitsOfWork, passwords: FakePasswords, signer: FakeSigner, policy: TokenPolicy
) -> None:
    await add_user(uows, passwords)
    issued = await log_in(uows, passwords, signer, policy)
    assert issued.refresh_token is not None

    await use.revoke("garbage", uows=uows)
    assert not uows.state.refresh[token_digest(issued.refresh_token)].is_spent()
    await use.revoke(issued.refresh_token, uows=uows)

    assert uows.state.refresh[token_digest(issued.refresh_token)].revoked_at is not None


async def test_configuring_clients_removes_those_no_longer_configured(
    uows: FakeUnitsOfWork,
) -> None:
    await use.configure_clients(
        [("orders", "s3cret", ("catalog:reserve",)), ("old", "x" * 20, ())], uows=uows
    )
    await use.configure_clients([("orders", "s3cret", ("catalog:reserve",))], uows=uows)

    assert set(uows.state.clients) == {"orders"}
