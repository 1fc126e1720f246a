"""The `idempotency_key` table: DDL each service's migration executes, and the store's SQL.

`IDEMPOTENCY_DDL` is ONE statement (a `DO` block), so an Alembic migration can run it with
`op.execute(IDEMPOTENCY_DDL)` even through SQLAlchemy's asyncpg driver, which prepares every
statement and refuses several commands in one string. `IDEMPOTENCY_DDL_STATEMENTS` holds the
same DDL as plain statements for anyone who prefers them.
"""

from __future__ import annotations

import functools

_CREATE_TABLE = """\
CREATE TABLE idempotency_key (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    principal        text        NOT NULL,
    method           text        NOT NULL,
    route            text        NOT NULL,
    key              text        NOT NULL,
    fingerprint      text        NOT NULL,
    status           text        NOT NULL
                     CONSTRAINT idempotency_key_status_check
                     CHECK (status IN ('in_flight', 'completed')),
    response_status  integer     NULL,
    response_body    jsonb       NULL,
    response_headers jsonb       NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    locked_at        timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz NULL,
    expires_at       timestamptz NOT NULL,
    CONSTRAINT idempotency_key_scope_key UNIQUE (principal, method, route, key)
)"""

_CREATE_EXPIRES_INDEX = (
    "CREATE INDEX idempotency_key_expires_at_idx ON idempotency_key (expires_at)"
)

IDEMPOTENCY_DDL_STATEMENTS: tuple[str, ...] = (_CREATE_TABLE, _CREATE_EXPIRES_INDEX)

IDEMPOTENCY_DDL: str = (
    "DO $idempotency_ddl$\nBEGIN\n"
    + "".join(f"{statement};\n" for statement in IDEMPOTENCY_DDL_STATEMENTS)
    + "END\n$idempotency_ddl$"
)

IDEMPOTENCY_DROP_DDL: str = "DROP TABLE IF EXISTS idempotency_key"

# --- the store's statements; times always come from the database clock -----------------
# JSON columns are read as text (`::text`) for the same reason they are written as text.

# $1 principal, $2 method, $3 route, $4 key, $5 fingerprint, $6 retention (interval)
CLAIM_SQL = """\
INSERT INTO idempotency_key
    (principal, method, route, key, fingerprint, status, locked_at, expires_at)
VALUES ($1, $2, $3, $4, $5, 'in_flight', now(), now() + $6::interval)
ON CONFLICT ON CONSTRAINT idempotency_key_scope_key DO NOTHING
RETURNING id, locked_at"""


@functools.cache
def claim_with_sql(effect: str) -> str:
    """CLAIM_SQL and a first effect in one statement (see `ClaimWith`): no row when the key
    was not claimed; else `claim_id`, `effect_landed` (NULL: the effect wrote nothing) and
    the effect's columns."""
    return (
        f"WITH claim AS (\n{CLAIM_SQL}\n), effect AS (\n{effect}\n)\n"
        "SELECT claim.id AS claim_id, e.* FROM claim\n"
        "LEFT JOIN (SELECT true AS effect_landed, effect.* FROM effect) AS e ON true"
    )


# $1 principal, $2 method, $3 route, $4 key, $5 in-flight timeout (interval)
READ_SQL = """\
SELECT id, fingerprint, status, locked_at,
       response_status, response_body::text AS response_body,
       response_headers::text AS response_headers,
       expires_at < now() AS expired,
       locked_at < now() - $5::interval AS stale
FROM idempotency_key
WHERE principal = $1 AND method = $2 AND route = $3 AND key = $4"""

# $1 id
DELETE_EXPIRED_SQL = "DELETE FROM idempotency_key WHERE id = $1 AND expires_at < now()"

# The claim's id is its fencing token: a takeover gives the row a new id, so the worker it
# was taken from can neither renew, complete nor release it any more.
# $1 id, $2 the locked_at we saw, $3 retention (interval)
TAKE_OVER_SQL = """\
UPDATE idempotency_key
SET id = gen_random_uuid(), locked_at = now(), expires_at = now() + $3::interval
WHERE id = $1 AND status = 'in_flight' AND locked_at = $2
RETURNING id"""

# The lease: a request in flight renews its claim; one not renewed for the in-flight
# timeout belongs to a worker that is gone. $1 ids of the claims in flight; answers the ones
# still ours (not completed or taken over).
RENEW_ALL_SQL = """\
UPDATE idempotency_key SET locked_at = now()
WHERE id = ANY($1::uuid[]) AND status = 'in_flight'
RETURNING id"""

# $1 id, $2 status, $3 body (JSON text), $4 headers (JSON text), $5 retention (interval).
# JSON travels as text so the store works whatever codecs the connection has registered
# for json/jsonb.
COMPLETE_SQL = """\
UPDATE idempotency_key
SET status = 'completed', response_status = $2,
    response_body = $3::text::jsonb, response_headers = $4::text::jsonb,
    completed_at = now(), expires_at = now() + $5::interval
WHERE id = $1 AND status = 'in_flight'
RETURNING response_status, response_body::text AS response_body,
       response_headers::text AS response_headers"""

# $1 id
RELEASE_SQL = "DELETE FROM idempotency_key WHERE id = $1 AND status = 'in_flight'"

# $1 batch size
PURGE_EXPIRED_SQL = """\
DELETE FROM idempotency_key
WHERE id IN (SELECT id FROM idempotency_key WHERE expires_at < now() LIMIT $1)"""
