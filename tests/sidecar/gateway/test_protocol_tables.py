"""The gateway protocol's tables (the text embedded in Claude Code 2.1.332, "Errors" and
"Usage-limit headers"), checked shape by shape: error statuses and types, the unified
standing and rejection headers, and the managed-settings checksum."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.errors import (
    AuthenticationFailed,
    BudgetExhausted,
    NotSupported,
    PolicyBlocked,
    PolicyDenied,
    RateLimited,
    RequestTooLarge,
    UpstreamUnavailable,
)
from sidecar.gateway import unified
from sidecar.gateway.settings import checksum
from sidecar.gateway.usage import with_caps, without_caps
from sidecar.policy.budgets import Budgets
from sidecar.policy.config import BudgetConfig

U = "anthropic-ratelimit-unified-"
KOLKATA = ZoneInfo("Asia/Kolkata")


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("error", "status", "error_type", "no_retry"),
    [
        (PolicyDenied("the model 'x' is not allowed"), 400, "invalid_request_error", False),
        (PolicyBlocked("blocked"), 400, "policy_blocked", True),
        (AuthenticationFailed("no token"), 401, "authentication_error", True),
        (RequestTooLarge("big"), 413, "request_too_large", False),
        (RateLimited("slow down", headers={"retry-after": "3"}), 429, "rate_limit_error", False),
        (BudgetExhausted("spent"), 429, "billing_error", True),
        (NotSupported("no such thing"), 501, "not_supported", True),
        (UpstreamUnavailable("down"), 529, "overloaded_error", False),
    ],
)
def test_each_error_has_the_protocols_status_type_and_retry_header(
    error: Exception, status: int, error_type: str, no_retry: bool
) -> None:
    assert (error.status, error.error_type) == (status, error_type)  # type: ignore[attr-defined]
    assert (error.headers.get("x-should-retry") == "false") is no_retry  # type: ignore[attr-defined]
    body = json.loads(error.envelope())  # type: ignore[attr-defined]
    assert body["type"] == "error" and body["error"]["type"] == error_type
    assert body["error"]["message"].startswith("claude-sidecar: ")


def test_a_policy_block_names_the_request_the_user_can_quote() -> None:
    e = PolicyBlocked("the prompt holds a secret")
    e.request_id = "01JREQUESTID"
    assert json.loads(e.envelope())["request_id"] == "01JREQUESTID"


# ---------------------------------------------------------------- unified headers


def cap(spent: float, limit: float = 100.0, period: str = "day", resets_at: float = 1786147200.0) -> unified.Cap:
    return unified.Cap(period, limit, spent, resets_at)


@pytest.mark.parametrize(
    ("spent", "status", "utilization", "threshold"),
    [
        (0.0, "allowed", "0.00", None),
        (50.0, "allowed", "0.50", None),
        (74.99, "allowed", "0.74", None),
        (75.0, "allowed_warning", "0.75", "0.75"),
        (82.0, "allowed_warning", "0.82", "0.75"),
        (95.0, "allowed_warning", "0.95", "0.95"),
        (99.999, "allowed_warning", "0.99", "0.95"),
        (100.0, "allowed_warning", "0.99", "0.95"),  # still allowing: below 1
    ],
)
def test_standing_headers_follow_the_usage_limit_table(spent: float, status: str, utilization: str, threshold: str | None) -> None:
    h = unified.standing(cap(spent))
    assert h[U + "status"] == status and h[U + "overage-status"] == status
    assert h[U + "representative-claim"] == "overage"
    assert h[U + "overage-utilization"] == utilization
    assert h.get(U + "overage-surpassed-threshold") == threshold
    assert h[U + "reset"] == h[U + "overage-reset"] == "1786147200"
    assert set(h) <= {U + k for k in ("status", "representative-claim", "overage-status", "overage-utilization",
                                     "overage-surpassed-threshold", "reset", "overage-reset")}  # fmt: skip


@given(st.floats(min_value=0, max_value=10, allow_nan=False))
def test_utilization_is_two_decimals_below_one_while_allowing(fraction: float) -> None:
    text = unified.utilization(fraction)
    assert len(text.split(".")[1]) == 2 and 0.0 <= float(text) < 1.0
    assert float(text) <= fraction + 1e-9


@pytest.mark.parametrize(("period", "name"), [("day", "daily"), ("week", "weekly"), ("month", "monthly")])
def test_the_rejection_is_exactly_the_protocols_shape(period: str, name: str) -> None:
    h = unified.rejection(cap(120.0, period=period), now=1786147200.0 - 37800)
    assert h == {
        "retry-after": "37800",
        "x-should-retry": "false",
        U + "status": "rejected",
        U + "reset": "1786147200",
        U + "overage-reset": "1786147200",
        U + "overage-utilization": "1",
        U + "overage-surpassed-threshold": "1",
        U + "overage-period": name,
        U + "overage-disabled-reason": "org_spend_cap_reached",
    }
    # With these two the client would drop the sidecar's message for its own.
    assert U + "representative-claim" not in h and U + "overage-status" not in h


def test_a_group_pool_is_described_as_monthly_with_its_scope() -> None:
    h = unified.rejection(cap(10.0, period="day"), now=1786100000.0, group_pool=True)
    assert h[U + "overage-period"] == "monthly" and h[U + "overage-scope"] == "group_pool"


def test_the_fullest_cap_is_described_and_of_equal_ones_the_one_resetting_last() -> None:
    day, month = cap(80.0, period="day", resets_at=100.0), cap(50.0, limit=400.0, period="month", resets_at=900.0)
    assert unified.fullest([day, month]) is day
    full_day, full_month = cap(100.0, resets_at=100.0), cap(400.0, limit=400.0, period="month", resets_at=900.0)
    assert unified.fullest([full_day, full_month]) is full_month
    assert unified.fullest([]) is None


class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now


def test_an_exhausted_budget_is_a_billing_error_with_one_sentence_and_the_rejection_headers() -> None:
    clock = Clock(datetime(2026, 11, 25, 18, 47, 30, tzinfo=KOLKATA))
    b = Budgets(BudgetConfig(daily_usd=10.0), KOLKATA, clock)
    b.settle(b.reserve(1.0), 10.03)
    with pytest.raises(BudgetExhausted) as err:
        b.reserve(0.21)
    e = err.value
    assert (e.status, e.error_type) == (429, "billing_error")
    assert e.message == (
        "the daily budget of $10.00 is used up ($10.03 spent today); it resets at 2026-11-26 00:00 Asia/Kolkata "
        "(in 5 h 13 min), so wait until then or raise budget.daily_usd in the sidecar's config."
    )
    assert e.message.count(". ") == 0 and e.message.endswith(".")  # one sentence
    reset = datetime(2026, 11, 26, tzinfo=KOLKATA).timestamp()
    assert e.headers == unified.rejection(unified.Cap("day", 10.0, 10.03, reset), clock.now)
    assert e.headers["retry-after"] == str(5 * 3600 + 12 * 60 + 30)


def test_a_request_larger_than_the_whole_budget_is_refused_the_same_way() -> None:
    clock = Clock(datetime(2026, 11, 25, 12, 0, tzinfo=KOLKATA))
    b = Budgets(BudgetConfig(daily_usd=1.0), KOLKATA, clock)
    with pytest.raises(BudgetExhausted) as err:
        b.reserve(1.75)
    e = err.value
    assert (e.status, e.error_type, e.headers["x-should-retry"]) == (429, "billing_error", "false")
    assert e.headers[U + "status"] == "rejected" and e.headers[U + "overage-period"] == "daily"
    assert e.message == (
        "this request needs about $1.75, more than the whole daily budget of $1.00, so it cannot run even after "
        "the budget resets at 2026-11-26 00:00 Asia/Kolkata (in 12 h); lower max_tokens, shorten the conversation "
        "(/compact) or raise budget.daily_usd in the sidecar's config."
    )


# ---------------------------------------------------------------- /api/oauth/usage


def test_usage_with_caps_pairs_dollars_with_the_headers_percent_and_reset() -> None:
    day = cap(82.5, limit=100.0, period="day", resets_at=1786147200.4)
    month = cap(100.0, limit=400.0, period="month", resets_at=1788000000.0)
    doc = with_caps([day, month])
    assert doc["extra_usage"] == {"is_enabled": True, "monthly_limit": 10000, "used_credits": 8250, "utilization": 82, "currency": "USD"}
    rows = doc["limits"]
    assert [(r["group"], r["percent"], r["is_active"]) for r in rows] == [("daily", 82, True), ("monthly", 25, False)]
    # The same second as the header's reset.
    headers = unified.standing(day)
    stamp = datetime.fromisoformat(rows[0]["resets_at"].replace("Z", "+00:00")).timestamp()
    assert stamp == float(headers[U + "overage-reset"])
    assert rows[0]["resets_at"].endswith(".000Z")


def test_usage_without_a_cap_has_no_limits_and_null_limits_not_zero() -> None:
    doc = without_caps(month=12.4, day=1.0, week=3.333)
    assert doc["limits"] == []
    extra = doc["extra_usage"]
    assert (extra["monthly_limit"], extra["utilization"], extra["used_credits"]) == (None, None, 1240)
    assert extra["daily"] == {"limit": None, "used_credits": 100, "utilization": None}
    assert extra["weekly"] == {"limit": None, "used_credits": 333, "utilization": None}


# ---------------------------------------------------------------- managed settings checksum

# Computed with the client's own algorithm (keys sorted at every level, JSON.stringify,
# SHA-256), run in node 20 from the function in Claude Code 2.1.332's bundle.
CHECKSUMS = [
    ({}, "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"),
    (
        {"permissions": {"deny": ["Bash(curl:*)", "WebFetch"], "allow": ["Read"]},
         "env": {"CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY": "1"}, "model": "claude-sonnet-5"},
        "sha256:1b46c4bd2c1226107ee356daed520363ce7e96cc88088ff030c6c03e3a1a4295",
    ),
    (
        {"z": {"b": [{"y": 1.0, "x": 2.5}], "a": True}, "a": None, "é": "ünïcode ✓", "n": 3},
        "sha256:e40051b8495a802676377dd67636f92f22c4d2459e09b17a9c76b9b5c6f6d971",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "expected"), CHECKSUMS)
def test_the_settings_checksum_is_the_clients(settings: dict[str, object], expected: str) -> None:
    assert checksum(settings) == expected
