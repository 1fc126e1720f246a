"""An order's version, and a notice of each change: the cursor and wake-up of status streams.

`version` grows by one whenever what a client sees of the order changes (status, lines,
totals, `stock_released`, `updated_at`); the reconciler's own bookkeeping (attempts, the
next attempt's time) leaves it alone. Every such change notifies `orders_changed` with
`'<order id> <version>'`, from the changing transaction itself, so each code path that
writes an order (placement, reconciler, cancel, catalog's release) is covered and a
rolled-back change announces nothing.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 10:15:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = (
    "ALTER TABLE customer_order ADD COLUMN version bigint NOT NULL DEFAULT 1",
    """
    CREATE FUNCTION customer_order_version() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF (NEW.status, NEW.lines, NEW.total_cents, NEW.currency, NEW.stock_released,
            NEW.updated_at)
           IS DISTINCT FROM
           (OLD.status, OLD.lines, OLD.total_cents, OLD.currency, OLD.stock_released,
            OLD.updated_at)
        THEN
            NEW.version := OLD.version + 1;
        ELSE
            NEW.version := OLD.version;
        END IF;
        RETURN NEW;
    END $$
    """,
    """
    CREATE TRIGGER customer_order_version BEFORE UPDATE ON customer_order
        FOR EACH ROW EXECUTE FUNCTION customer_order_version()
    """,
    """
    CREATE FUNCTION customer_order_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('orders_changed', NEW.id::text || ' ' || NEW.version::text);
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER customer_order_notify AFTER UPDATE ON customer_order
        FOR EACH ROW WHEN (NEW.version <> OLD.version)
        EXECUTE FUNCTION customer_order_notify()
    """,
)

DOWNGRADE = (
    "DROP TRIGGER customer_order_notify ON customer_order",
    "DROP FUNCTION customer_order_notify()",
    "DROP TRIGGER customer_order_version ON customer_order",
    "DROP FUNCTION customer_order_version()",
    "ALTER TABLE customer_order DROP COLUMN version",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
