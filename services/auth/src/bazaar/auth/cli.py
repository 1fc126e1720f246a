"""`bazaar-auth`: the auth service's command line (see bazaar.shared.cli)."""

from __future__ import annotations

from pathlib import Path

from bazaar.auth.app import create_app
from bazaar.auth.config import AuthSettings
from bazaar.auth.keys_cli import LIST_KEYS, ROTATE_KEYS
from bazaar.shared.cli import ServiceCommands, run

#: services/auth/migrations, beside the package (same layout in the image).
MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"

COMMANDS = ServiceCommands(
    name="auth",
    settings=AuthSettings,
    app=create_app,
    migrations_dir=MIGRATIONS_DIR,
    extra=(ROTATE_KEYS, LIST_KEYS),
)


def main() -> int:
    """Entry point of `bazaar-auth`."""
    return run(COMMANDS)


if __name__ == "__main__":
    raise SystemExit(main())
