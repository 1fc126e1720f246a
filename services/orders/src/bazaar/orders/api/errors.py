"""The one table mapping orders domain errors to problem answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bazaar.orders.domain import errors
from bazaar.shared.errors import ErrorMap
from bazaar.shared.problem import ProblemSpec


def _short_products(exc: BaseException) -> Mapping[str, Any]:
    assert isinstance(exc, errors.InsufficientStock)
    extensions: dict[str, Any] = {"product_ids": [str(p) for p in exc.product_ids]}
    if exc.order_id is not None:
        extensions["order_id"] = str(exc.order_id)
    return extensions


def _line_error(exc: BaseException) -> Mapping[str, Any]:
    extensions: dict[str, Any] = {
        "errors": [{"loc": ["body", "lines"], "msg": str(exc), "type": "value_error"}]
    }
    order_id = getattr(exc, "order_id", None)
    if order_id is not None:
        extensions["order_id"] = str(order_id)
    return extensions


def _order_ref(exc: BaseException) -> Mapping[str, Any]:
    order_id = getattr(exc, "order_id", None)
    return {"order_id": str(order_id)} if order_id is not None else {}


ERROR_MAP: ErrorMap = {
    errors.OrderNotFound: ProblemSpec(404, "not-found", "Not Found"),
    errors.OrderNotCancellable: ProblemSpec(409, "conflict", "Conflict"),
    errors.OrderExpired: ProblemSpec(409, "conflict", "Conflict", _order_ref),
    errors.InsufficientStock: ProblemSpec(
        409, "insufficient-stock", "Insufficient Stock", _short_products
    ),
    errors.KeyUsedForAnotherOrder: ProblemSpec(
        422, "idempotency-key-mismatch", "Idempotency Key Mismatch"
    ),
    errors.DuplicateLine: ProblemSpec(422, "validation-error", "Validation Error", _line_error),
    errors.OrderRefused: ProblemSpec(422, "validation-error", "Validation Error", _line_error),
}
