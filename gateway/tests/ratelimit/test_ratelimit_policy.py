"""Policies, decisions and verdicts render the draft-ietf-httpapi-ratelimit-headers fields."""

from __future__ import annotations

import pytest

from bazaar.gateway.ratelimit import Decision, Policy, Verdict, safe_key

USER = Policy("user", 1200, 60)
TOKEN = Policy("token", 20, 60)


def test_a_policy_renders_as_a_structured_field_item() -> None:
    assert USER.header_value() == '"user";q=1200;w=60'


def test_a_decision_renders_remaining_and_reset() -> None:
    assert Decision.counted(USER, 602, 41).item() == '"user";r=598;t=41'


def test_the_verdict_joins_every_policy_into_two_headers() -> None:
    verdict = Verdict([Decision.counted(USER, 2, 41), Decision.counted(TOKEN, 3, 7)])
    assert verdict.headers() == {
        "RateLimit-Policy": '"user";q=1200;w=60, "token";q=20;w=60',
        "RateLimit": '"user";r=1198;t=41, "token";r=17;t=7',
    }


def test_the_last_request_of_the_quota_is_allowed_and_the_next_is_not() -> None:
    last, over = Decision.counted(TOKEN, 20, 5), Decision.counted(TOKEN, 21, 5)
    assert (last.allowed, last.remaining) == (True, 0)
    assert (over.allowed, over.remaining) == (False, 0)


def test_one_denying_policy_denies_and_its_reset_is_the_retry_after() -> None:
    verdict = Verdict(
        [
            Decision.counted(USER, 1, 50),
            Decision.counted(TOKEN, 21, 7),
            Decision.counted(TOKEN, 30, 9),
        ]
    )
    assert not verdict.allowed
    assert verdict.retry_after == 9


def test_an_allowed_verdict_has_no_retry_after() -> None:
    verdict = Verdict([Decision.counted(USER, 1, 50)])
    assert verdict.allowed
    assert verdict.retry_after == 0


def test_reset_is_at_least_one_second() -> None:
    assert Decision.counted(USER, 1, 0).reset == 1


def test_windows_are_aligned_to_the_epoch() -> None:
    assert USER.window_start(1_700_000_039.9) == 1_699_999_980
    assert USER.window_start(120.0) == 120
    assert USER.window_start(179.999) == 120


@pytest.mark.parametrize("name", ["", "a:b", 'q"uote', "x" * 65, "user\n"])
def test_a_policy_name_that_would_be_ambiguous_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="policy name"):
        Policy(name, 1, 1)


@pytest.mark.parametrize(("quota", "window"), [(-1, 60), (10, 0)])
def test_a_policy_needs_a_quota_and_a_window(quota: int, window: int) -> None:
    with pytest.raises(ValueError, match="quota"):
        Policy("user", quota, window)


def test_plain_keys_stay_readable_and_odd_keys_are_hashed() -> None:
    assert safe_key("203.0.113.7") == "203.0.113.7"
    assert safe_key("[2001:db8::1]") == "[2001:db8::1]"
    for odd in ["", "a b", "ünï", "x" * 65, "a\n", "#" + "0" * 64]:
        hashed = safe_key(odd)
        assert hashed.startswith("#")
        assert len(hashed) == 65
    assert safe_key("a b") != safe_key("a  b")
