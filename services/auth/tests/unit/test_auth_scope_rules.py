"""Roles to scopes, and how a requested scope is narrowed (pure rules)."""

from __future__ import annotations

import pytest

from bazaar.auth.domain.errors import InvalidScope
from bazaar.auth.domain.scopes import (
    ALL_SCOPES,
    format_scope,
    narrow,
    parse_scope,
    scopes_for_roles,
)

CUSTOMER = frozenset({"catalog:read", "orders:read", "orders:write"})
USER_SCOPES = frozenset(
    {"catalog:read", "catalog:write", "orders:read", "orders:write", "orders:admin", "users:admin"}
)


def test_every_scope_of_api_md_is_known() -> None:
    assert set(ALL_SCOPES) == USER_SCOPES | {"catalog:reserve"}


def test_a_customer_reads_the_catalog_and_reads_and_writes_orders() -> None:
    assert scopes_for_roles(["customer"]) == CUSTOMER


def test_an_admin_has_every_user_scope_but_no_service_scope() -> None:
    assert scopes_for_roles(["admin"]) == USER_SCOPES
    assert "catalog:reserve" not in scopes_for_roles(["admin", "customer"])


def test_roles_add_up_and_an_unknown_role_grants_nothing() -> None:
    assert scopes_for_roles(["customer", "admin"]) == USER_SCOPES
    assert scopes_for_roles(["root"]) == frozenset()
    assert scopes_for_roles([]) == frozenset()


@pytest.mark.parametrize("text", [None, "", "   "])
def test_no_scope_parameter_means_no_request(text: str | None) -> None:
    assert parse_scope(text) is None


def test_a_scope_parameter_is_split_on_spaces_and_repeats_collapse() -> None:
    assert parse_scope("orders:read  catalog:read orders:read") == {"orders:read", "catalog:read"}


def test_no_request_grants_everything_allowed() -> None:
    assert narrow(None, CUSTOMER) == CUSTOMER


def test_a_subset_is_granted_as_asked() -> None:
    assert narrow(frozenset({"catalog:read"}), CUSTOMER) == {"catalog:read"}


@pytest.mark.parametrize(
    "requested", [{"users:admin"}, {"catalog:read", "users:admin"}, {"no-such:scope"}]
)
def test_asking_beyond_what_is_allowed_is_invalid_scope(requested: set[str]) -> None:
    with pytest.raises(InvalidScope):
        narrow(frozenset(requested), CUSTOMER)


def test_nothing_allowed_refuses_any_request() -> None:
    with pytest.raises(InvalidScope):
        narrow(frozenset({"catalog:read"}), frozenset())


def test_scopes_are_written_sorted_and_space_separated() -> None:
    assert format_scope({"orders:write", "catalog:read", "orders:read"}) == (
        "catalog:read orders:read orders:write"
    )
    assert format_scope(set()) == ""
