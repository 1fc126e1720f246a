"""apply_patch: a JSON merge patch of the patchable fields, and what really changed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from bazaar.catalog.domain.errors import InvalidChange
from bazaar.catalog.domain.model import PATCHABLE, Product, apply_patch

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def product(**changes: object) -> Product:
    fields: dict[str, object] = {
        "id": uuid.UUID(int=1),
        "sku": "MUG-1",
        "name": "Mug",
        "description": "Blue",
        "price_cents": 1000,
        "currency": "EUR",
        "stock": 3,
        "version": 4,
        "created_at": NOW,
        "updated_at": NOW,
    }
    fields.update(changes)
    return Product(**fields)  # type: ignore[arg-type]


def test_only_the_fields_sent_change_and_the_version_goes_up_by_one() -> None:
    before = product()

    after, changed = apply_patch(before, {"price_cents": 1200, "stock": 7})

    assert changed == ["price_cents", "stock"]
    assert (after.price_cents, after.stock, after.version) == (1200, 7, 5)
    assert (after.name, after.description, after.currency) == ("Mug", "Blue", "EUR")
    assert (after.id, after.sku, after.created_at) == (before.id, before.sku, before.created_at)


def test_a_field_sent_with_its_current_value_is_not_a_change() -> None:
    before = product()

    after, changed = apply_patch(before, {"name": "Mug", "stock": 3})

    assert changed == []
    assert after is before


def test_an_empty_patch_changes_nothing() -> None:
    before = product()

    assert apply_patch(before, {}) == (before, [])


def test_changed_fields_are_listed_in_a_stable_order() -> None:
    _, changed = apply_patch(product(), {"stock": 1, "name": "Cup", "currency": "USD"})

    assert changed == [name for name in PATCHABLE if name in {"stock", "name", "currency"}]


def test_every_patchable_field_can_change_at_once_with_one_version_step() -> None:
    changes = {"name": "Cup", "description": None, "price_cents": 1, "currency": "USD", "stock": 0}

    after, changed = apply_patch(product(), changes)

    assert sorted(changed) == sorted(PATCHABLE)
    assert after.version == 5
    assert after.description is None


def test_the_description_may_be_cleared_with_null() -> None:
    after, changed = apply_patch(product(description="Blue"), {"description": None})

    assert after.description is None
    assert changed == ["description"]


@pytest.mark.parametrize("field", ["name", "price_cents", "currency", "stock"])
def test_a_required_field_cannot_be_null(field: str) -> None:
    with pytest.raises(InvalidChange) as refused:
        apply_patch(product(), {field: None})

    assert refused.value.field == field


@pytest.mark.parametrize("field", ["id", "sku", "version", "created_at", "updated_at", "colour"])
def test_a_field_outside_the_patchable_ones_is_refused(field: str) -> None:
    with pytest.raises(InvalidChange) as refused:
        apply_patch(product(), {"name": "Cup", field: "x"})

    assert refused.value.field == field


def test_the_original_product_is_left_untouched() -> None:
    before = product()

    apply_patch(before, {"name": "Cup"})

    assert before.name == "Mug" and before.version == 4
