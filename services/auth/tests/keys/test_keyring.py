"""The key ring against PostgreSQL: persistence, encryption at rest, rotation, replicas."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from bazaar.auth.adapters import keyring as keyring_module
from bazaar.auth.adapters import keys as keys_module
from bazaar.auth.adapters.keyring import KeyRing, NoSigningKey, SigningKeyUnreadable
from bazaar.auth.config import AuthSettings
from bazaar.shared.db import Database

from .conftest import ACTIVATION_DELAY, CACHE_SECONDS, LEEWAY_SECONDS, TOKEN_TTL, Clock

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}
GRACE = TOKEN_TTL + timedelta(seconds=LEEWAY_SECONDS + CACHE_SECONDS)
CACHE = timedelta(seconds=CACHE_SECONDS)


async def stored(db: Database) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        rows = await conn.fetch("SELECT * FROM signing_key ORDER BY created_at")
    return [dict(row) for row in rows]


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def test_ensure_key_creates_one_key_that_signs_at_once(
    keyring: KeyRing, keys_db: Database, clock: Clock
) -> None:
    await keyring.ensure_key()
    [row] = await stored(keys_db)
    assert row["activates_at"] == clock.now
    assert row["retired_at"] is None and row["unpublish_at"] is None
    header = jwt.get_unverified_header(await keyring.sign({"sub": "user-1"}))
    assert header == {"alg": "ES256", "kid": row["kid"], "typ": "at+jwt"}


async def test_keys_persist_across_a_new_key_ring(
    make_keyring: Callable[..., KeyRing], keys_db: Database
) -> None:
    first = make_keyring()
    await first.ensure_key()
    token = await first.sign({"sub": "user-1"})

    restarted = make_keyring()
    await restarted.ensure_key()

    assert len(await stored(keys_db)) == 1
    assert kid_of(await restarted.sign({"sub": "user-1"})) == kid_of(token)


async def test_private_keys_are_stored_encrypted_with_the_passphrase(
    keyring: KeyRing, keys_db: Database, keys_settings: AuthSettings
) -> None:
    await keyring.ensure_key()
    [row] = await stored(keys_db)
    pem = row["private_pem"].encode()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, password=None)
    passphrase = keys_settings.key_passphrase.get_secret_value().encode()
    assert serialization.load_pem_private_key(pem, password=passphrase)


async def test_the_stored_public_jwk_holds_no_private_member(
    make_settings: Callable[..., AuthSettings],
    make_keyring: Callable[..., KeyRing],
    keys_db: Database,
) -> None:
    await make_keyring(make_settings(signing_alg="RS256")).ensure_key()
    [row] = await stored(keys_db)
    assert row["alg"] == "RS256"
    assert not PRIVATE_MEMBERS & set(row["public_jwk"])
    assert row["public_jwk"]["kid"] == row["kid"]


async def test_a_wrong_passphrase_stops_start_up_with_an_error_naming_the_setting(
    make_settings: Callable[..., AuthSettings],
    make_keyring: Callable[..., KeyRing],
    keys_db: Database,
) -> None:
    await make_keyring().ensure_key()
    [row] = await stored(keys_db)
    wrong = make_keyring(make_settings(key_passphrase="not-the-passphrase"))

    with pytest.raises(SigningKeyUnreadable, match="AUTH_KEY_PASSPHRASE") as raised:
        await wrong.ensure_key()

    message = str(raised.value)
    assert row["kid"] in message
    assert "PRIVATE KEY" not in message and row["private_pem"][40:80] not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert len(await stored(keys_db)) == 1  # nothing was replaced


async def test_an_empty_passphrase_is_refused(
    make_settings: Callable[..., AuthSettings], make_keyring: Callable[..., KeyRing]
) -> None:
    with pytest.raises(ValueError, match="AUTH_KEY_PASSPHRASE"):
        make_keyring(make_settings(key_passphrase=""))


async def test_a_rotation_refuses_a_passphrase_that_cannot_read_the_current_key(
    make_settings: Callable[..., AuthSettings],
    make_keyring: Callable[..., KeyRing],
    keys_db: Database,
) -> None:
    await make_keyring().ensure_key()
    wrong = make_keyring(make_settings(key_passphrase="not-the-passphrase"))

    with pytest.raises(SigningKeyUnreadable, match="AUTH_KEY_PASSPHRASE"):
        await wrong.rotate(ACTIVATION_DELAY)

    assert len(await stored(keys_db)) == 1


async def test_replicas_starting_together_on_an_empty_table_create_one_key(
    make_keyring: Callable[..., KeyRing], keys_db: Database
) -> None:
    replicas = [make_keyring() for _ in range(5)]

    await asyncio.gather(*(ring.ensure_key() for ring in replicas))

    [row] = await stored(keys_db)
    kids = {kid_of(await ring.sign({"sub": "user-1"})) for ring in replicas}
    assert kids == {row["kid"]}


async def test_signing_before_ensure_key_on_an_empty_table_fails_clearly(
    keyring: KeyRing,
) -> None:
    with pytest.raises(NoSigningKey, match="ensure_key"):
        await keyring.sign({"sub": "user-1"})


async def test_kids_are_random_url_safe_strings(keyring: KeyRing, keys_db: Database) -> None:
    await keyring.ensure_key()
    for _ in range(3):
        await keyring.rotate(ACTIVATION_DELAY)
    kids = [row["kid"] for row in await stored(keys_db)]
    assert len(set(kids)) == 4
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", kid) for kid in kids)


async def test_a_rotation_schedules_the_predecessors_retirement_and_unpublication(
    keyring: KeyRing, keys_db: Database, clock: Clock
) -> None:
    await keyring.ensure_key()
    started = clock.now
    clock.advance(timedelta(minutes=5))

    new_kid = await keyring.rotate(ACTIVATION_DELAY)

    old, new = await stored(keys_db)
    assert new["kid"] == new_kid
    assert new["activates_at"] == clock.now + ACTIVATION_DELAY
    assert new["retired_at"] is None and new["unpublish_at"] is None
    assert old["activates_at"] == started
    assert old["retired_at"] == new["activates_at"]
    assert old["unpublish_at"] == new["activates_at"] + GRACE


async def test_a_second_rotation_never_delays_an_earlier_unpublication(
    keyring: KeyRing, keys_db: Database, clock: Clock
) -> None:
    await keyring.ensure_key()
    clock.advance(timedelta(seconds=1))
    await keyring.rotate(ACTIVATION_DELAY)
    [first_before, _] = await stored(keys_db)
    clock.advance(timedelta(minutes=1))

    await keyring.rotate(ACTIVATION_DELAY)

    first, second, third = await stored(keys_db)
    assert first["unpublish_at"] == first_before["unpublish_at"]
    assert second["retired_at"] == third["activates_at"]
    assert second["unpublish_at"] == third["activates_at"] + GRACE


async def test_an_immediate_rotation_signs_at_once_and_keeps_the_old_key_published(
    keyring: KeyRing, clock: Clock
) -> None:
    await keyring.ensure_key()
    old_kid = kid_of(await keyring.sign({"sub": "user-1"}))

    new_kid = await keyring.rotate(timedelta(0))

    assert kid_of(await keyring.sign({"sub": "user-1"})) == new_kid
    published = {key["kid"] for key in (await keyring.jwks())["keys"]}
    assert published == {old_kid, new_kid}


async def test_a_rotation_deletes_keys_unpublished_more_than_a_day_ago(
    keyring: KeyRing, keys_db: Database, clock: Clock
) -> None:
    await keyring.ensure_key()
    clock.advance(timedelta(seconds=1))
    await keyring.rotate(timedelta(0))
    [first, _] = await stored(keys_db)
    clock.now = first["unpublish_at"] + timedelta(hours=23)
    await keyring.rotate(timedelta(0))
    assert first["kid"] in {row["kid"] for row in await stored(keys_db)}

    clock.now = first["unpublish_at"] + timedelta(days=1, seconds=1)
    await keyring.rotate(timedelta(0))

    kids = {row["kid"] for row in await stored(keys_db)}
    assert first["kid"] not in kids and len(kids) == 3


async def test_another_replica_sees_a_rotation_within_its_cache_period(
    make_keyring: Callable[..., KeyRing], clock: Clock
) -> None:
    here, there = make_keyring(), make_keyring()
    await here.ensure_key()
    await there.ensure_key()
    old_kid = kid_of(await there.sign({"sub": "user-1"}))

    new_kid = await here.rotate(ACTIVATION_DELAY)
    stale = [key["kid"] for key in (await there.jwks())["keys"]]
    clock.advance(CACHE)
    fresh = [key["kid"] for key in (await there.jwks())["keys"]]

    assert stale == [old_kid]  # still within the replica's cache period
    assert fresh == [old_kid, new_kid]
    assert kid_of(await there.sign({"sub": "user-1"})) == old_kid
    clock.advance(ACTIVATION_DELAY)
    assert kid_of(await there.sign({"sub": "user-1"})) == new_kid


async def test_a_private_key_is_decrypted_once_per_process_not_per_token(
    keyring: KeyRing, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    calls: list[str] = []
    decrypt = keys_module.decrypt_key

    def counting(pem: str, passphrase: bytes, record: Any) -> Any:
        calls.append(record.kid)
        return decrypt(pem, passphrase, record)

    monkeypatch.setattr(keyring_module, "decrypt_key", counting)
    await keyring.ensure_key()
    for _ in range(10):
        clock.advance(CACHE)  # every token after a refresh of the key set
        await asyncio.gather(*(keyring.sign({"sub": "user-1"}) for _ in range(5)))

    assert len(calls) == 1


async def test_both_algorithms_write_keys_of_the_expected_type(
    make_settings: Callable[..., AuthSettings],
    make_keyring: Callable[..., KeyRing],
) -> None:
    for alg, kty in (("ES256", "EC"), ("RS256", "RSA")):
        ring = make_keyring(make_settings(signing_alg=alg))
        await ring.rotate(timedelta(0))
        token = await ring.sign({"sub": "user-1"})
        assert jwt.get_unverified_header(token)["alg"] == alg
        [jwk] = [k for k in (await ring.jwks())["keys"] if k["kid"] == kid_of(token)]
        assert jwk["kty"] == kty and jwk["alg"] == alg and jwk["use"] == "sig"
