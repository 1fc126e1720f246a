"""`bazaar-auth rotate-keys`, `list-keys` and `revoke-key`: signing keys from the command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from bazaar.auth.adapters.keyring import KeyRing, SigningKeyUnreadable, safe_activation_delay
from bazaar.auth.config import AuthSettings
from bazaar.auth.domain.keys import KeyRecord, signing_key_at
from bazaar.shared.app import database_for
from bazaar.shared.cli import ExtraCommand

T = TypeVar("T")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else "-"


async def _with_keyring(settings: AuthSettings, work: Callable[[KeyRing], Awaitable[T]]) -> T:
    db = database_for(settings)
    await db.open()
    try:
        return await work(KeyRing(db, settings))
    finally:
        await db.close()


async def _rotate(ring: KeyRing, activate_in: timedelta) -> tuple[str, list[KeyRecord]]:
    kid = await ring.rotate(activate_in)
    return kid, await ring.keys()


def _configure_rotate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--activate-in",
        type=float,
        metavar="SECONDS",
        default=None,
        help="publish the new key now, sign with it after SECONDS "
        "(default: AUTH_KEY_ACTIVATION_DELAY_SECONDS)",
    )


def rotate_keys(settings: AuthSettings, args: argparse.Namespace) -> int:
    """Publish a new signing key; print when it signs and when the old keys leave the JWKS."""
    seconds = args.activate_in
    if seconds is None:
        seconds = settings.key_activation_delay_seconds
    if seconds < 0:
        _say("auth: --activate-in must not be negative")
        return 2
    activate_in = timedelta(seconds=seconds)
    try:
        kid, keys = asyncio.run(_with_keyring(settings, lambda ring: _rotate(ring, activate_in)))
    except SigningKeyUnreadable as exc:
        _say(f"auth: no key rotated: {exc}")
        return 1
    new = next(key for key in keys if key.kid == kid)
    leaving = [
        key
        for key in keys
        if key.kid != kid and key.unpublish_at is not None and key.is_published_at(new.created_at)
    ]
    _say(f"auth: new signing key {kid} ({new.alg}) is published now")
    _say(f"auth: it signs from {_when(new.activates_at)}")
    safe = safe_activation_delay(settings)
    if leaving and activate_in < safe:
        _say(
            f"auth: warning: it signs sooner than key_cache_seconds + jwks_max_age_seconds "
            f"({safe.total_seconds():g} s): a verifier may meet its tokens before it has it"
        )
    for old in leaving:
        _say(f"auth: key {old.kid} leaves the JWKS at {_when(old.unpublish_at)}")
    return 0


def list_keys(settings: AuthSettings, _args: argparse.Namespace) -> int:
    """Print every stored signing key (public facts only) and which one signs now."""
    keys = asyncio.run(_with_keyring(settings, lambda ring: ring.keys()))
    now = datetime.now(UTC)
    signing = signing_key_at(keys, now)
    _say(f"{'kid':<24} {'alg':<6} {'activates_at':<26} {'unpublish_at':<26} signs_now")
    for key in keys:
        signs = "yes" if signing is not None and key.kid == signing.kid else "no"
        _say(
            f"{key.kid:<24} {key.alg:<6} {_when(key.activates_at):<26} "
            f"{_when(key.unpublish_at):<26} {signs}"
        )
    return 0


ROTATE_KEYS = ExtraCommand(
    name="rotate-keys",
    help="publish a new signing key now; it signs after the activation delay",
    run=rotate_keys,
    configure=_configure_rotate,
)
LIST_KEYS = ExtraCommand(
    name="list-keys",
    help="list the signing keys: when each signs and leaves the JWKS",
    run=list_keys,
)


def _configure_revoke(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kid", help="the key id to withdraw (see list-keys)")


def revoke_key(settings: AuthSettings, args: argparse.Namespace) -> int:
    """Withdraw a compromised key now; a new key takes over if it was the one signing."""
    try:
        replacement = asyncio.run(_with_keyring(settings, lambda ring: ring.revoke(args.kid)))
    except KeyError:
        _say(f"auth: no signing key {args.kid!r}")
        return 1
    _say(f"auth: key {args.kid} withdrawn: out of the JWKS and no longer signing")
    if replacement:
        _say(f"auth: new key {replacement} signs from now on")
    _say(
        "auth: verifiers stop trusting it when their JWKS cache expires "
        f"(at most {settings.jwks_max_age_seconds} s here, plus any proxy cache)"
    )
    return 0


REVOKE_KEY = ExtraCommand(
    "revoke-key",
    "withdraw a compromised signing key at once",
    revoke_key,
    _configure_revoke,
)
