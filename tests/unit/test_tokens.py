"""Callback tokens: bound to one attempt, signed, and expiring after the workflow's timeout."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from itsdangerous import URLSafeTimedSerializer

from app.tokens import (
    CLOCK_LEEWAY,
    MAX_LIFETIME,
    SALT,
    CallbackClaim,
    CallbackTokens,
    ExpiredToken,
    InvalidToken,
)

KEY = "a-server-secret-of-some-length"
CLAIM = CallbackClaim("order-123", "charge", "run_1", 2)
T0 = 1_800_000_000.0
HOUR = 3600.0
DAY = 86400.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def tokens_at(clock: Clock, key: str = KEY) -> CallbackTokens:
    return CallbackTokens(key, clock=clock)


def test_a_token_carries_its_claim() -> None:
    clock = Clock()
    tokens = tokens_at(clock)
    assert tokens.load(tokens.make(CLAIM, lifetime=HOUR)) == CLAIM


def test_a_token_is_url_safe() -> None:
    token = tokens_at(Clock()).make(CLAIM, lifetime=HOUR)
    assert all(c.isalnum() or c in "-_." for c in token), token


@pytest.mark.parametrize(
    "claim",
    [
        CallbackClaim("wf", "a", "r", 1),
        CallbackClaim("wf:with.odd-chars_1", "step.id:x", "run_abc", 100),
        CallbackClaim("x" * 128, "y" * 128, "r" * 40, 7),
    ],
)
def test_every_field_of_the_claim_survives(claim: CallbackClaim) -> None:
    tokens = tokens_at(Clock())
    assert tokens.load(tokens.make(claim, lifetime=60)) == claim


def test_a_token_is_accepted_until_its_lifetime_has_passed() -> None:
    clock = Clock()
    tokens = tokens_at(clock)
    token = tokens.make(CLAIM, lifetime=HOUR)

    clock.now = T0 + HOUR + CLOCK_LEEWAY
    assert tokens.load(token) == CLAIM

    clock.now = T0 + HOUR + CLOCK_LEEWAY + 1
    with pytest.raises(ExpiredToken, match="expired") as raised:
        tokens.load(token)
    assert "1 hour" in str(raised.value)


def test_an_expired_token_says_how_old_it_is_and_how_long_it_was_valid() -> None:
    clock = Clock()
    tokens = tokens_at(clock)
    token = tokens.make(CLAIM, lifetime=300)
    clock.now = T0 + 2 * DAY
    with pytest.raises(ExpiredToken) as raised:
        tokens.load(token)
    message = str(raised.value)
    assert "issued 2 days ago" in message
    assert "valid for 5 minutes" in message


def test_no_token_lives_longer_than_31_days() -> None:
    clock = Clock()
    tokens = tokens_at(clock)
    token = tokens.make(CLAIM, lifetime=10 * 365 * DAY)

    clock.now = T0 + MAX_LIFETIME + CLOCK_LEEWAY
    assert tokens.load(token) == CLAIM
    clock.now = T0 + MAX_LIFETIME + CLOCK_LEEWAY + 1
    with pytest.raises(ExpiredToken):
        tokens.load(token)
    assert MAX_LIFETIME == 31 * DAY


def test_a_fractional_lifetime_is_rounded_up() -> None:
    clock = Clock()
    tokens = tokens_at(clock)
    token = tokens.make(CLAIM, lifetime=0.25)
    clock.now = T0 + 1 + CLOCK_LEEWAY
    assert tokens.load(token) == CLAIM
    clock.now = T0 + 2 + CLOCK_LEEWAY
    with pytest.raises(ExpiredToken):
        tokens.load(token)


def test_a_token_from_a_clock_a_little_ahead_is_accepted() -> None:
    # Another process, whose clock runs ahead of this one, issued it.
    ahead = Clock(T0 + 30)
    token = tokens_at(ahead).make(CLAIM, lifetime=60)
    assert tokens_at(Clock(T0)).load(token) == CLAIM


@given(
    started_before_issue=st.floats(min_value=0, max_value=30 * DAY),
    timeout=st.floats(min_value=0.001, max_value=MAX_LIFETIME),
)
def test_a_token_is_still_accepted_at_its_workflows_deadline(
    started_before_issue: float, timeout: float
) -> None:
    # The workflow started (or was re-run) at or before the token was issued, so its
    # deadline (start + timeout) comes no later than issue + timeout.
    issued = T0 + started_before_issue
    if started_before_issue > timeout:
        return  # the workflow timed out before this step could start
    clock = Clock(issued)
    tokens = tokens_at(clock)
    token = tokens.make(CLAIM, lifetime=timeout)
    clock.now = T0 + timeout  # the deadline
    assert tokens.load(token) == CLAIM


def test_a_token_made_before_tokens_carried_a_lifetime_lives_31_days() -> None:
    old = URLSafeTimedSerializer(KEY, salt=SALT).dumps(["order-123", "charge", "run_1", 2])
    assert CallbackTokens(KEY).load(old) == CLAIM


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: t[:-1], id="truncated"),
        pytest.param(lambda t: t[:-4] + ("AAAA" if t[-4:] != "AAAA" else "BBBB"), id="signature"),
        pytest.param(lambda t: "x" + t[1:], id="payload"),
        pytest.param(lambda t: "", id="empty"),
        pytest.param(lambda t: "not-a-token", id="garbage"),
        pytest.param(lambda t: t + "." + t, id="doubled"),
    ],
)
def test_a_tampered_token_is_invalid(mangle: object) -> None:
    tokens = tokens_at(Clock())
    token = tokens.make(CLAIM, lifetime=HOUR)
    assert callable(mangle)
    with pytest.raises(InvalidToken):
        tokens.load(mangle(token))


def test_a_token_made_with_another_key_is_invalid() -> None:
    token = tokens_at(Clock(), key="another-key").make(CLAIM, lifetime=HOUR)
    with pytest.raises(InvalidToken):
        tokens_at(Clock()).load(token)


def test_a_tampered_token_is_invalid_even_when_it_is_also_expired() -> None:
    # The signature is checked first: an old forged token says 403, never 410.
    clock = Clock()
    token = tokens_at(clock, key="another-key").make(CLAIM, lifetime=1)
    clock.now = T0 + 365 * DAY
    with pytest.raises(InvalidToken):
        tokens_at(clock).load(token)


def test_a_token_signed_for_another_purpose_is_invalid() -> None:
    other = URLSafeTimedSerializer(KEY, salt="something.else").dumps(
        ["order-123", "charge", "run_1", 2, 60]
    )
    with pytest.raises(InvalidToken):
        CallbackTokens(KEY).load(other)


@pytest.mark.parametrize(
    "payload",
    [
        ["too", "short"],
        {"a": 1},
        "text",
        ["wf", "a", "r", "not-a-number", 60],
        ["wf", "a", "r", 1, "x"],
    ],
)
def test_a_well_signed_token_of_the_wrong_shape_is_invalid(payload: object) -> None:
    token = URLSafeTimedSerializer(KEY, salt=SALT).dumps(payload)
    with pytest.raises(InvalidToken):
        CallbackTokens(KEY).load(token)


def test_the_repr_shows_no_key() -> None:
    tokens = CallbackTokens(KEY)
    assert KEY not in repr(tokens)
