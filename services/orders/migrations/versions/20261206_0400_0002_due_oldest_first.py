"""An index for leasing due orders oldest first.

The reconciler's claim reads due orders `ORDER BY created_at, id` among those pending or
with a reservation to give back; with only `(next_attempt_at)` indexed it sorted the whole
backlog on every claim (38 ms a claim at 50k due). The predicate is the claim's own, so the
planner can walk this index in order and stop at the limit.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 04:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX customer_order_due_oldest_idx ON customer_order (created_at, id) "
        "WHERE status = 'pending' OR release_pending"
    )


def downgrade() -> None:
    op.execute("DROP INDEX customer_order_due_oldest_idx")
