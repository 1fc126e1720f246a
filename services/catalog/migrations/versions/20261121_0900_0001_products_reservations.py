"""Products, reservations, and the shared outbox and idempotency tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-21 09:00:00
"""

from collections.abc import Sequence

from alembic import op

from bazaar.shared.idempotency import IDEMPOTENCY_DDL, IDEMPOTENCY_DROP_DDL
from bazaar.shared.outbox import OUTBOX_DDL, OUTBOX_DROP_DDL

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PRODUCT = (
    """CREATE TABLE product (
    id uuid PRIMARY KEY,
    sku text NOT NULL CONSTRAINT product_sku_format CHECK (sku ~ '^[A-Za-z0-9._-]{1,64}$'),
    name text NOT NULL CONSTRAINT product_name_length CHECK (char_length(name) BETWEEN 1 AND 200),
    description text CONSTRAINT product_description_length CHECK (char_length(description) <= 5000),
    price_cents bigint NOT NULL CONSTRAINT product_price_range CHECK (price_cents BETWEEN 0 AND 100000000),
    currency text NOT NULL CONSTRAINT product_currency_format CHECK (currency ~ '^[A-Z]{3}$'),
    stock integer NOT NULL CONSTRAINT product_stock_nonnegative CHECK (stock >= 0),
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
)""",
    "CREATE UNIQUE INDEX product_sku_key ON product (sku) WHERE deleted_at IS NULL",
    "CREATE INDEX product_listing_idx ON product (created_at DESC, id DESC) WHERE deleted_at IS NULL",
)

RESERVATION = (
    """CREATE TABLE reservation (
    id uuid PRIMARY KEY,
    order_id uuid NOT NULL CONSTRAINT reservation_order_id_key UNIQUE,
    status text NOT NULL CONSTRAINT reservation_status_check CHECK (status IN ('active', 'released')),
    total_cents bigint NOT NULL,
    currency text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    released_at timestamptz
)""",
    """CREATE TABLE reservation_line (
    reservation_id uuid NOT NULL REFERENCES reservation (id) ON DELETE CASCADE,
    line_no integer NOT NULL,
    product_id uuid NOT NULL REFERENCES product (id),
    sku text NOT NULL,
    name text NOT NULL,
    quantity integer NOT NULL CONSTRAINT reservation_line_quantity_positive CHECK (quantity > 0),
    unit_price_cents bigint NOT NULL,
    currency text NOT NULL,
    CONSTRAINT reservation_line_pkey PRIMARY KEY (reservation_id, line_no)
)""",
    "CREATE INDEX reservation_line_product_idx ON reservation_line (product_id)",
)


def upgrade() -> None:
    for statement in (*PRODUCT, *RESERVATION, *OUTBOX_DDL, IDEMPOTENCY_DDL):
        op.execute(statement)


def downgrade() -> None:
    drops = ("DROP TABLE reservation_line", "DROP TABLE reservation", "DROP TABLE product")
    for statement in (IDEMPOTENCY_DROP_DDL, *OUTBOX_DROP_DDL, *drops):
        op.execute(statement)
