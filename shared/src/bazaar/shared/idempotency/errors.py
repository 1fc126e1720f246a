"""The problems an idempotent request can end in, and the check of the key itself."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from bazaar.shared.problem import ProblemError, ValidationFailed

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


class IdempotencyKeyMissing(ProblemError):
    """The route requires an `Idempotency-Key` header and the request has none."""

    status, slug, title = 400, "idempotency-key-missing", "Idempotency Key Missing"
    default_detail = f"This request requires an {IDEMPOTENCY_KEY_HEADER} header."


class IdempotencyKeyMismatch(ProblemError):
    """The key was already used with a different request body."""

    status, slug, title = 422, "idempotency-key-mismatch", "Idempotency Key Mismatch"
    default_detail = "This idempotency key was already used with a different request body."


class IdempotencyKeyInUse(ProblemError):
    """A request with the same key is still being processed; retry shortly."""

    status, slug, title = 409, "idempotency-key-in-use", "Idempotency Key In Use"
    default_detail = "A request with this idempotency key is still being processed."
    default_headers: ClassVar[Mapping[str, str]] = {"Retry-After": "1"}


def _key_error(msg: str, type_: str) -> ValidationFailed:
    return ValidationFailed(
        [{"loc": ["header", IDEMPOTENCY_KEY_HEADER], "msg": msg, "type": type_}],
        detail=f"The {IDEMPOTENCY_KEY_HEADER} header is invalid.",
    )


def validate_idempotency_key(key: str) -> str:
    """Return `key` if it is 1-255 visible ASCII characters, else raise ValidationFailed."""
    if not key:
        raise _key_error("must not be empty", "string_too_short")
    if len(key) > MAX_KEY_LENGTH:
        raise _key_error(f"must be at most {MAX_KEY_LENGTH} characters", "string_too_long")
    if not all("\x21" <= ch <= "\x7e" for ch in key):
        raise _key_error(
            "must contain only visible ASCII characters (no spaces or control characters)",
            "string_pattern_mismatch",
        )
    return key
