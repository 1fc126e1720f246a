"""The inbox of catalog's consumers (processed_message).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 12:00:00
"""

from collections.abc import Sequence

from alembic import op

from bazaar.shared.messaging.inbox import PROCESSED_MESSAGE_DDL, PROCESSED_MESSAGE_DROP_DDL

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for statement in PROCESSED_MESSAGE_DDL:
        op.execute(statement)


def downgrade() -> None:
    for statement in PROCESSED_MESSAGE_DROP_DDL:
        op.execute(statement)
