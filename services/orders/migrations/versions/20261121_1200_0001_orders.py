"""Orders, and the shared outbox, inbox and idempotency tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-21 12:00:00
"""

from collections.abc import Sequence

from alembic import op

from bazaar.shared.idempotency import IDEMPOTENCY_DDL, IDEMPOTENCY_DROP_DDL
from bazaar.shared.messaging.inbox import PROCESSED_MESSAGE_DDL, PROCESSED_MESSAGE_DROP_DDL
from bazaar.shared.outbox import OUTBOX_DDL, OUTBOX_DROP_DDL

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CUSTOMER_ORDER = (
    """CREATE TABLE customer_order (
    id uuid PRIMARY KEY,
    customer_id text NOT NULL,
    status text NOT NULL
        CONSTRAINT customer_order_status_check
        CHECK (status IN ('pending', 'confirmed', 'rejected', 'cancelled')),
    lines jsonb NOT NULL
        CONSTRAINT customer_order_lines_check
        CHECK (jsonb_typeof(lines) = 'array' AND jsonb_array_length(lines) BETWEEN 1 AND 50),
    total_cents bigint CONSTRAINT customer_order_total_nonnegative CHECK (total_cents >= 0),
    currency text CONSTRAINT customer_order_currency_format CHECK (currency ~ '^[A-Z]{3}$'),
    reservation_id uuid,
    stock_released boolean NOT NULL DEFAULT false,
    reject_reason text,
    release_pending boolean NOT NULL DEFAULT false,
    idempotency_key text,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT customer_order_idempotency_key UNIQUE (customer_id, idempotency_key),
    CONSTRAINT customer_order_confirmed_is_priced CHECK (
        status <> 'confirmed'
        OR (total_cents IS NOT NULL AND currency IS NOT NULL AND reservation_id IS NOT NULL)
    ),
    CONSTRAINT customer_order_rejected_has_reason CHECK (
        status <> 'rejected' OR reject_reason IS NOT NULL
    )
)""",
    "CREATE INDEX customer_order_customer_listing_idx "
    "ON customer_order (customer_id, created_at DESC, id DESC)",
    "CREATE INDEX customer_order_listing_idx ON customer_order (created_at DESC, id DESC)",
    "CREATE INDEX customer_order_due_idx ON customer_order (next_attempt_at) "
    "WHERE status = 'pending' OR release_pending",
)


def upgrade() -> None:
    for statement in (*CUSTOMER_ORDER, *OUTBOX_DDL, *PROCESSED_MESSAGE_DDL, IDEMPOTENCY_DDL):
        op.execute(statement)


def downgrade() -> None:
    drops = (IDEMPOTENCY_DROP_DDL, *PROCESSED_MESSAGE_DROP_DDL, *OUTBOX_DROP_DDL)
    for statement in (*drops, "DROP TABLE customer_order"):
        op.execute(statement)
