"""Idempotency keys with Stripe semantics, stored in each service's own database."""

from bazaar.shared.idempotency.errors import (
    IDEMPOTENCY_KEY_HEADER,
    IdempotencyKeyInUse,
    IdempotencyKeyMismatch,
    IdempotencyKeyMissing,
    validate_idempotency_key,
)
from bazaar.shared.idempotency.http import (
    REPLAYED_HEADER,
    OptionalIdempotencyKey,
    RequiredIdempotencyKey,
    idempotency_key_header,
    outcome_response,
    problem_response_for,
    request_scope,
)
from bazaar.shared.idempotency.models import (
    ClaimWith,
    IdempotencyScope,
    Outcome,
    StoredResponse,
    request_fingerprint,
)
from bazaar.shared.idempotency.schema import (
    IDEMPOTENCY_DDL,
    IDEMPOTENCY_DDL_STATEMENTS,
    IDEMPOTENCY_DROP_DDL,
)
from bazaar.shared.idempotency.store import IdempotencyStore

__all__ = [
    "IDEMPOTENCY_DDL",
    "IDEMPOTENCY_DDL_STATEMENTS",
    "IDEMPOTENCY_DROP_DDL",
    "IDEMPOTENCY_KEY_HEADER",
    "REPLAYED_HEADER",
    "ClaimWith",
    "IdempotencyKeyInUse",
    "IdempotencyKeyMismatch",
    "IdempotencyKeyMissing",
    "IdempotencyScope",
    "IdempotencyStore",
    "OptionalIdempotencyKey",
    "Outcome",
    "RequiredIdempotencyKey",
    "StoredResponse",
    "idempotency_key_header",
    "outcome_response",
    "problem_response_for",
    "request_fingerprint",
    "request_scope",
    "validate_idempotency_key",
]
