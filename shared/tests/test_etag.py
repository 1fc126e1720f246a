"""Entity tags and conditional requests (RFC 9110 §8.8.3.2 and §13.1)."""

from __future__ import annotations

import pytest

from bazaar.shared.etag import (
    PreconditionFailed,
    PreconditionRequired,
    check_if_match,
    if_none_match_matches,
    strong_etag,
)
from bazaar.shared.problem import ProblemError

# RFC 9110 §8.8.3.2: (tag in the header, current tag, strong match?, weak match?)
RFC_9110_TABLE = [
    ('W/"1"', 'W/"1"', False, True),
    ('W/"1"', 'W/"2"', False, False),
    ('W/"1"', '"1"', False, True),
    ('"1"', '"1"', True, True),
]


def _if_match_holds(header: str | None, etag: str) -> bool:
    try:
        check_if_match(header, etag)
    except PreconditionFailed:
        return False
    return True


def test_a_strong_etag_is_a_quoted_32_hex_digit_tag() -> None:
    etag = strong_etag("product", "0b7e", 3)
    assert etag.startswith('"') and etag.endswith('"')
    assert len(etag) == 34
    int(etag[1:-1], 16)


def test_a_strong_etag_is_deterministic_and_changes_with_any_part() -> None:
    assert strong_etag("p", 1) == strong_etag("p", 1)
    assert strong_etag("p", 1) != strong_etag("p", 2)
    assert strong_etag("ab", "c") != strong_etag("a", "bc")


@pytest.mark.parametrize(("header", "etag", "strong", "weak"), RFC_9110_TABLE)
def test_if_none_match_uses_the_weak_comparison_of_rfc_9110(
    header: str, etag: str, strong: bool, weak: bool
) -> None:
    assert if_none_match_matches(header, etag) is weak
    assert if_none_match_matches(etag, header) is weak


@pytest.mark.parametrize(("header", "etag", "strong", "weak"), RFC_9110_TABLE)
def test_if_match_uses_the_strong_comparison_of_rfc_9110(
    header: str, etag: str, strong: bool, weak: bool
) -> None:
    assert _if_match_holds(header, etag) is strong
    assert _if_match_holds(etag, header) is strong


def test_a_missing_if_none_match_matches_nothing() -> None:
    assert if_none_match_matches(None, '"1"') is False


@pytest.mark.parametrize("header", ["*", " * ", '"9", *'])
def test_an_if_none_match_star_matches_any_current_representation(header: str) -> None:
    assert if_none_match_matches(header, '"1"') is True


@pytest.mark.parametrize(
    "header",
    ['"a", "1"', '"a","1"', '  "a" ,\tW/"1"  ', '"a", , "1"', '"x,y", "1"', 'junk, "1"'],
)
def test_if_none_match_finds_the_tag_in_a_list(header: str) -> None:
    assert if_none_match_matches(header, '"1"') is True


@pytest.mark.parametrize("header", ['"a", "b"', '"x,1"', "1", '"1" "2"', "", "W/1", '*"1"'])
def test_if_none_match_without_the_tag_does_not_match(header: str) -> None:
    assert if_none_match_matches(header, '"1"') is False


def test_a_missing_if_match_answers_428() -> None:
    with pytest.raises(PreconditionRequired) as caught:
        check_if_match(None, '"1"')
    assert (caught.value.status, caught.value.slug) == (428, "precondition-required")
    assert caught.value.title == "Precondition Required"
    assert caught.value.detail is not None and "If-Match" in caught.value.detail


def test_a_blank_if_match_counts_as_missing() -> None:
    with pytest.raises(PreconditionRequired):
        check_if_match("  ", '"1"')


def test_a_stale_if_match_answers_412() -> None:
    with pytest.raises(PreconditionFailed) as caught:
        check_if_match(strong_etag("p", 1), strong_etag("p", 2))
    assert (caught.value.status, caught.value.slug) == (412, "precondition-failed")
    assert caught.value.title == "Precondition Failed"


def test_a_weak_if_match_never_matches_even_with_the_same_opaque_tag() -> None:
    etag = strong_etag("p", 1)
    with pytest.raises(PreconditionFailed):
        check_if_match("W/" + etag, etag)


def test_a_current_if_match_passes() -> None:
    etag = strong_etag("p", 1)
    check_if_match(etag, etag)  # does not raise


def test_an_if_match_list_holding_the_current_tag_passes() -> None:
    etag = strong_etag("p", 1)
    check_if_match(f'"old", {etag}', etag)  # does not raise


@pytest.mark.parametrize("header", ["*", " * "])
def test_an_if_match_star_passes_for_an_existing_resource(header: str) -> None:
    check_if_match(header, strong_etag("p", 1))  # does not raise


def test_an_unparsable_if_match_answers_412() -> None:
    etag = strong_etag("p", 1)
    with pytest.raises(PreconditionFailed):
        check_if_match(etag[1:-1], etag)


def test_the_precondition_errors_are_problem_errors() -> None:
    assert issubclass(PreconditionRequired, ProblemError)
    assert issubclass(PreconditionFailed, ProblemError)
