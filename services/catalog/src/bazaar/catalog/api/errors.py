"""The one table mapping catalog domain errors to problem answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bazaar.catalog.domain import errors
from bazaar.shared.errors import ErrorMap
from bazaar.shared.problem import ProblemSpec


def _short_products(exc: BaseException) -> Mapping[str, Any]:
    assert isinstance(exc, errors.InsufficientStock)  # noqa: S101 - registered for this class only
    return {"product_ids": [str(p) for p in exc.product_ids]}


def _field_error(loc: list[str], type_: str) -> Any:
    def extensions(exc: BaseException) -> Mapping[str, Any]:
        field = getattr(exc, "field", None)
        where = [*loc, field] if field else loc
        return {"errors": [{"loc": where, "msg": str(exc), "type": type_}]}

    return extensions


ERROR_MAP: ErrorMap = {
    errors.ProductNotFound: ProblemSpec(404, "not-found", "Not Found"),
    errors.ReservationNotFound: ProblemSpec(404, "not-found", "Not Found"),
    errors.DuplicateSku: ProblemSpec(409, "conflict", "Conflict"),
    errors.OrderAlreadyReserved: ProblemSpec(409, "conflict", "Conflict"),
    errors.InsufficientStock: ProblemSpec(
        409, "insufficient-stock", "Insufficient Stock", _short_products
    ),
    errors.DuplicateLine: ProblemSpec(
        422, "validation-error", "Validation Error", _field_error(["body", "lines"], "value_error")
    ),
    errors.MixedCurrency: ProblemSpec(
        422, "validation-error", "Validation Error", _field_error(["body", "lines"], "currency")
    ),
    errors.InvalidChange: ProblemSpec(
        422, "validation-error", "Validation Error", _field_error(["body"], "value_error")
    ),
}
