"""`bazaar-auth rotate-keys` and `list-keys` against the run's database."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest

from bazaar.auth.adapters.keyring import KeyRing
from bazaar.auth.config import AuthSettings
from bazaar.auth.keys_cli import LIST_KEYS, ROTATE_KEYS
from bazaar.shared.db import Database


def parse(command: str, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    for extra in (ROTATE_KEYS, LIST_KEYS):
        extra.configure(sub.add_parser(extra.name))
    return parser.parse_args([command, *argv])


async def run(command: str, settings: AuthSettings, *argv: str) -> int:
    extra = ROTATE_KEYS if command == ROTATE_KEYS.name else LIST_KEYS
    # The commands call asyncio.run, so they get a thread (and loop) of their own.
    return await asyncio.to_thread(extra.run, settings, parse(command, *argv))


async def test_rotate_keys_prints_the_new_kid_and_the_schedule(
    keyring: KeyRing,
    keys_settings: AuthSettings,
    keys_db: Database,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await keyring.ensure_key()
    async with keys_db.connection() as conn:
        old_kid = await conn.fetchval("SELECT kid FROM signing_key")

    assert await run("rotate-keys", keys_settings, "--activate-in", "900") == 0

    out = capsys.readouterr().out
    async with keys_db.connection() as conn:
        new_kid = await conn.fetchval("SELECT kid FROM signing_key WHERE kid <> $1", old_kid)
        new_activates = await conn.fetchval(
            "SELECT activates_at FROM signing_key WHERE kid = $1", new_kid
        )
        old_unpublish = await conn.fetchval(
            "SELECT unpublish_at FROM signing_key WHERE kid = $1", old_kid
        )
    assert f"new signing key {new_kid} (ES256)" in out
    assert f"signs from {new_activates.isoformat(timespec='seconds')}" in out
    assert f"key {old_kid} leaves the JWKS at {old_unpublish.isoformat(timespec='seconds')}" in out
    assert "warning" not in out
    assert "PRIVATE" not in out


async def test_rotate_keys_defaults_to_the_configured_delay_and_warns_when_too_short(
    keyring: KeyRing,
    make_settings: Callable[..., AuthSettings],
    keys_db: Database,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await keyring.ensure_key()
    settings = make_settings(key_activation_delay_seconds=5)

    assert await run("rotate-keys", settings) == 0

    assert "warning" in capsys.readouterr().out
    async with keys_db.connection() as conn:
        delay = await conn.fetchval(
            "SELECT activates_at - created_at FROM signing_key WHERE retired_at IS NULL"
        )
    assert delay.total_seconds() == 5


async def test_rotate_keys_with_the_wrong_passphrase_fails_without_a_new_key(
    keyring: KeyRing,
    make_settings: Callable[..., AuthSettings],
    keys_db: Database,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await keyring.ensure_key()

    assert await run("rotate-keys", make_settings(key_passphrase="not-the-passphrase")) == 1

    assert "AUTH_KEY_PASSPHRASE" in capsys.readouterr().out
    async with keys_db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM signing_key") == 1


async def test_list_keys_shows_which_key_signs_and_no_private_material(
    keyring: KeyRing,
    keys_settings: AuthSettings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await keyring.ensure_key()
    new_kid = await keyring.rotate(timedelta(hours=1))

    assert await run("list-keys", keys_settings) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["kid", "alg", "activates_at", "unpublish_at", "signs_now"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert len(rows) == 2
    assert rows[new_kid][-1] == "no"
    [signing] = [kid for kid, row in rows.items() if row[-1] == "yes"]
    assert signing != new_kid
    assert all("PRIVATE" not in line for line in lines)
