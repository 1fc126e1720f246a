"""`bazaar-catalog`: the catalog's command line (see bazaar.shared.cli)."""

from __future__ import annotations

from pathlib import Path

from bazaar.catalog.app import create_app
from bazaar.catalog.config import CatalogSettings
from bazaar.catalog.seed import load_demo_products
from bazaar.shared.cli import ServiceCommands, run

#: services/catalog/migrations, beside the package (same layout in the image).
MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"

COMMANDS = ServiceCommands(
    name="catalog",
    settings=CatalogSettings,
    app=create_app,
    migrations_dir=MIGRATIONS_DIR,
    seed=load_demo_products,
)


def main() -> int:
    """Entry point of `bazaar-catalog`."""
    return run(COMMANDS)


if __name__ == "__main__":
    raise SystemExit(main())
