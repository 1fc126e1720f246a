"""Users, service clients, refresh tokens, login throttling, signing keys, outbox, idempotency.

Revision ID: 0001
Revises:
Create Date: 2026-11-21 09:40:00
"""

from collections.abc import Sequence

from alembic import op

from bazaar.shared.idempotency import IDEMPOTENCY_DDL, IDEMPOTENCY_DROP_DDL
from bazaar.shared.outbox import OUTBOX_DDL, OUTBOX_DROP_DDL

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    """CREATE TABLE user_account (
    id uuid PRIMARY KEY,
    email text NOT NULL CONSTRAINT user_account_email_length CHECK (char_length(email) <= 254),
    name text NOT NULL CONSTRAINT user_account_name_length CHECK (char_length(name) BETWEEN 1 AND 200),
    roles text[] NOT NULL CONSTRAINT user_account_roles_present CHECK (cardinality(roles) >= 1),
    password_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
)""",
    # Emails are unique whatever their case.
    "CREATE UNIQUE INDEX user_account_email_key ON user_account (lower(email))",
    "CREATE INDEX user_account_listing_idx ON user_account (created_at DESC, id DESC)",
    """CREATE TABLE service_client (
    client_id text PRIMARY KEY,
    secret_hash text NOT NULL,
    scopes text[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
)""",
    """CREATE TABLE refresh_token (
    id uuid PRIMARY KEY,
    token_hash bytea NOT NULL CONSTRAINT refresh_token_hash_key UNIQUE,
    family_id uuid NOT NULL,
    user_id uuid NOT NULL REFERENCES user_account (id) ON DELETE CASCADE,
    client_id text NOT NULL,
    scope text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    revoked_at timestamptz
)""",
    "CREATE INDEX refresh_token_family_idx ON refresh_token (family_id)",
    """CREATE TABLE login_throttle (
    email_key text PRIMARY KEY,
    failures integer NOT NULL,
    last_failed_at timestamptz NOT NULL,
    blocked_until timestamptz
)""",
    """CREATE TABLE signing_key (
    kid text PRIMARY KEY,
    alg text NOT NULL CONSTRAINT signing_key_alg_check CHECK (alg IN ('ES256', 'RS256')),
    public_jwk jsonb NOT NULL,
    private_pem text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    activates_at timestamptz NOT NULL,
    retired_at timestamptz,
    unpublish_at timestamptz
)""",
)


def upgrade() -> None:
    for statement in (*TABLES, *OUTBOX_DDL, IDEMPOTENCY_DDL):
        op.execute(statement)


def downgrade() -> None:
    drops = (
        "DROP TABLE signing_key",
        "DROP TABLE login_throttle",
        "DROP TABLE refresh_token",
        "DROP TABLE service_client",
        "DROP TABLE user_account",
    )
    for statement in (IDEMPOTENCY_DROP_DDL, *OUTBOX_DROP_DDL, *drops):
        op.execute(statement)
