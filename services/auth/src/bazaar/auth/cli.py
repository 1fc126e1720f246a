"""`bazaar-auth`: the auth service's command line (see bazaar.shared.cli)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bazaar.auth.app import create_app
from bazaar.auth.config import AuthSettings
from bazaar.auth.keys_cli import LIST_KEYS, REVOKE_KEY, ROTATE_KEYS
from bazaar.shared.cli import ExtraCommand, ServiceCommands, run

#: services/auth/migrations, beside the package (same layout in the image).
MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"


def _dev_login(settings: AuthSettings, _args: argparse.Namespace) -> int:
    """Print the bootstrap admin's login, in development only."""
    if settings.environment != "development":
        sys.stderr.write("dev-login prints credentials in development only\n")
        return 1
    sys.stdout.write(f"{settings.admin_email} {settings.admin_password.get_secret_value()}\n")
    return 0


DEV_LOGIN = ExtraCommand(
    "dev-login", "print the development admin's email and password", _dev_login
)

COMMANDS = ServiceCommands(
    name="auth",
    settings=AuthSettings,
    app=create_app,
    migrations_dir=MIGRATIONS_DIR,
    extra=(ROTATE_KEYS, LIST_KEYS, REVOKE_KEY, DEV_LOGIN),
)


def main() -> int:
    """Entry point of `bazaar-auth`."""
    return run(COMMANDS)


if __name__ == "__main__":
    raise SystemExit(main())
