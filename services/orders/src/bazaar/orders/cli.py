"""`bazaar-orders`: the orders service's command line (see bazaar.shared.cli)."""

from __future__ import annotations

from pathlib import Path

from bazaar.orders.app import create_app
from bazaar.orders.config import OrdersSettings
from bazaar.shared.cli import ServiceCommands, run

#: services/orders/migrations, beside the package (same layout in the image).
MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"

COMMANDS = ServiceCommands(
    name="orders",
    settings=OrdersSettings,
    app=create_app,
    migrations_dir=MIGRATIONS_DIR,
)


def main() -> int:
    """Entry point of `bazaar-orders`."""
    return run(COMMANDS)


if __name__ == "__main__":
    raise SystemExit(main())
