"""Budgets: reservations, settlement, refusals with their message and headers, thresholds,
and periods cut in the configured zone (with a clock the test moves)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sidecar.errors import BudgetExhausted, RateLimited
from sidecar.policy.budgets import Budgets, duration, period_bounds, usd
from sidecar.policy.config import BudgetConfig

KOLKATA = ZoneInfo("Asia/Kolkata")  # UTC+5:30: a local day starts at 18:30 UTC
BERLIN = ZoneInfo("Europe/Berlin")


class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, at: datetime) -> None:
        self.now = at.timestamp()


def budgets(clock: Clock, tz: ZoneInfo = KOLKATA, **kw: Any) -> tuple[Budgets, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    return Budgets(BudgetConfig(**kw), tz, clock, events.append), events


def local(tz: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=tz)  # type: ignore[misc]


def test_reserve_and_settle_with_the_real_cost() -> None:
    clock = Clock(local(KOLKATA, 2026, 11, 25, 12, 0))
    b, _ = budgets(clock, daily_usd=10.0)
    r1 = b.reserve(2.0)
    r2 = b.reserve(3.0)
    [day] = b.state()
    assert (day["spent_usd"], day["reserved_usd"], day["in_flight"]) == (0.0, 5.0, 2)
    b.settle(r1, 0.25)
    b.settle(r2, 4.5)  # more than reserved: the real cost is what counts
    [day] = b.state()
    assert (day["spent_usd"], day["reserved_usd"], day["in_flight"]) == (4.75, 0.0, 0)
    assert day["resets_at"] == "2026-11-26T00:00:00+05:30"


def test_exhausted_budget_refuses_until_the_reset_with_its_message_and_headers() -> None:
    clock = Clock(local(KOLKATA, 2026, 11, 25, 18, 47, 30))
    b, _ = budgets(clock, daily_usd=10.0)
    b.settle(b.reserve(1.0), 10.03)
    with pytest.raises(BudgetExhausted) as err:
        b.reserve(0.21)
    e = err.value
    assert (e.status, e.error_type) == (429, "billing_error")
    assert e.message == (
        "the daily budget of $10.00 is used up ($10.03 spent today); it resets at 2026-11-26 00:00 Asia/Kolkata "
        "(in 5 h 13 min), so wait until then or raise budget.daily_usd in the sidecar's config."
    )
    assert e.headers["retry-after"] == str(5 * 3600 + 12 * 60 + 30) and e.headers["x-should-retry"] == "false"
    assert e.envelope().startswith(b'{"type": "error", "error": {"type": "billing_error", "message": "claude-sidecar: the daily')


def test_a_request_that_does_not_fit_what_is_left_is_refused_until_the_reset() -> None:
    clock = Clock(local(BERLIN, 2026, 11, 25, 9, 0))
    b, _ = budgets(clock, BERLIN, daily_usd=25.0)
    b.settle(b.reserve(1.0), 24.90)
    with pytest.raises(BudgetExhausted, match=r"the daily budget of \$25.00 cannot fit this request \(about \$0.21, with \$24.90 spent today\)"):
        b.reserve(0.21)
    b.reserve(0.05)  # a smaller one still fits


def test_the_latest_reset_of_the_exhausted_budgets_is_named() -> None:
    clock = Clock(local(BERLIN, 2026, 11, 25, 9, 0))  # a Wednesday
    b, _ = budgets(clock, BERLIN, daily_usd=100.0, weekly_usd=20.0, monthly_usd=400.0)
    b.settle(b.reserve(1.0), 20.0)
    with pytest.raises(BudgetExhausted) as err:
        b.reserve(0.5)
    assert "weekly budget of $20.00 is used up ($20.00 spent this week)" in err.value.message
    assert "resets at 2026-11-30 00:00 Europe/Berlin (in 4 d 15 h)" in err.value.message


def test_a_short_wait_for_the_reset_is_still_a_billing_error_that_is_not_retried() -> None:
    clock = Clock(local(KOLKATA, 2026, 11, 25, 23, 59, 30))
    b, _ = budgets(clock, daily_usd=1.0)
    b.settle(b.reserve(0.5), 1.0)
    with pytest.raises(BudgetExhausted) as err:
        b.reserve(0.1)
    # The protocol's billing_error always says x-should-retry: false; retry-after says when.
    assert (err.value.headers["retry-after"], err.value.headers["x-should-retry"]) == ("30", "false")


def test_requests_in_flight_make_a_request_wait_not_stop() -> None:
    clock = Clock(local(KOLKATA, 2026, 11, 25, 12, 0))
    b, _ = budgets(clock, daily_usd=1.0)
    held = [b.reserve(0.3) for _ in range(3)]
    with pytest.raises(RateLimited) as err:
        b.reserve(0.3)
    assert not isinstance(err.value, BudgetExhausted)
    assert err.value.headers == {"retry-after": "5"}
    assert err.value.message == (
        "daily budget: $0.00 of $1.00 spent today and $0.90 held by 3 request(s) in flight; "
        "this request needs about $0.30, so it waits for them to finish"
    )
    b.settle(held[0], 0.02)
    b.reserve(0.3)  # the settled one freed its room


def test_a_request_bigger_than_the_whole_budget_is_denied_for_good() -> None:
    b, _ = budgets(Clock(local(KOLKATA, 2026, 11, 25, 12, 0)), daily_usd=1.0)
    with pytest.raises(BudgetExhausted, match=r"needs about \$1.75, more than the whole daily budget of \$1.00, .*; lower max_tokens"):
        b.reserve(1.75)


def test_no_overshoot_beyond_what_is_reserved() -> None:
    """Admitted reservations never exceed the budget; with real costs at or under the
    reservations, spend never passes the limit, however requests interleave."""
    b, _ = budgets(Clock(local(KOLKATA, 2026, 11, 25, 12, 0)), daily_usd=1.0)
    admitted = []
    for _ in range(20):
        try:
            admitted.append(b.reserve(0.12))
        except RateLimited:
            pass
    assert len(admitted) == 8  # 8 x 0.12 = 0.96; a 9th would hold 1.08
    for r in admitted:
        b.settle(r, 0.12)
    assert b.state()[0]["spent_usd"] == pytest.approx(0.96)


def test_day_rolls_over_at_local_midnight_in_a_non_utc_zone() -> None:
    # 18:29 UTC is 23:59 in Kolkata; 18:31 UTC is the next local day.
    clock = Clock(datetime.fromisoformat("2026-11-25T18:29:00+00:00"))
    b, _ = budgets(clock, daily_usd=1.0, monthly_usd=100.0)
    b.settle(b.reserve(0.5), 1.0)
    with pytest.raises(BudgetExhausted, match="resets at 2026-11-26 00:00 Asia/Kolkata"):
        b.reserve(0.1)
    clock.set(datetime.fromisoformat("2026-11-25T18:31:00+00:00"))
    day, month = b.state()
    assert (day["spent_usd"], day["resets_at"]) == (0.0, "2026-11-27T00:00:00+05:30")
    assert month["spent_usd"] == 1.0  # the month goes on
    b.reserve(0.1)


def test_a_request_that_started_before_midnight_is_booked_on_its_own_day() -> None:
    clock = Clock(local(KOLKATA, 2026, 11, 25, 23, 59, 50))
    b, _ = budgets(clock, daily_usd=1.0, monthly_usd=100.0)
    r = b.reserve(0.4)
    clock.set(local(KOLKATA, 2026, 11, 26, 0, 0, 20))
    b.settle(r, 0.9)
    day, month = b.state()
    assert (day["spent_usd"], day["reserved_usd"], day["in_flight"]) == (0.0, 0.0, 0)
    assert (month["spent_usd"], month["in_flight"]) == (0.9, 0)


def test_periods_are_calendar_aligned_across_dst() -> None:
    # Berlin leaves summer time on 2026-10-25: that local day has 25 hours.
    at = local(BERLIN, 2026, 10, 25, 12, 0).timestamp()
    start, end = period_bounds("day", at, BERLIN)
    assert end - start == 25 * 3600
    start, end = period_bounds("week", at, BERLIN)  # a Sunday: the week began on Monday the 19th
    assert datetime.fromtimestamp(start, BERLIN).isoformat() == "2026-10-19T00:00:00+02:00"
    assert datetime.fromtimestamp(end, BERLIN).isoformat() == "2026-10-26T00:00:00+01:00"
    start, end = period_bounds("month", local(BERLIN, 2026, 12, 31, 23, 0).timestamp(), BERLIN)
    assert datetime.fromtimestamp(end, BERLIN).isoformat() == "2027-01-01T00:00:00+01:00"


def test_thresholds_are_announced_once_per_period() -> None:
    clock = Clock(local(KOLKATA, 2026, 11, 25, 12, 0))
    b, events = budgets(clock, daily_usd=10.0, thresholds=(0.8, 0.95))
    b.settle(b.reserve(1), 7.9)
    assert events == []
    b.settle(b.reserve(1), 0.2)
    b.settle(b.reserve(1), 0.1)
    assert events == [
        {"period": "day", "fraction": 0.8, "spent_usd": 8.1, "limit_usd": 10.0, "resets_at": "2026-11-26T00:00:00+05:30"}
    ]
    b.settle(b.reserve(0.5), 1.5)
    assert [e["fraction"] for e in events] == [0.8, 0.95]
    clock.set(local(KOLKATA, 2026, 11, 26, 12, 0))
    b.settle(b.reserve(1), 9.0)
    assert [(e["fraction"], e["resets_at"][:10]) for e in events[2:]] == [(0.8, "2026-11-27")]


def test_spend_so_far_is_loaded_and_old_thresholds_stay_quiet() -> None:
    clock = Clock(local(KOLKATA, 2026, 11, 25, 12, 0))
    b, events = budgets(clock, daily_usd=10.0, monthly_usd=100.0)
    starts: list[float] = []
    b.load(lambda start: (starts.append(start), 9.0 if len(starts) == 1 else 50.0)[1])
    assert [datetime.fromtimestamp(s, KOLKATA).isoformat() for s in starts] == [
        "2026-11-25T00:00:00+05:30", "2026-11-01T00:00:00+05:30",
    ]  # fmt: skip
    assert [w["spent_usd"] for w in b.state()] == [9.0, 50.0]
    b.settle(b.reserve(0.5), 0.1)
    assert events == []  # 0.8 was crossed before the start: not news
    b.settle(b.reserve(0.5), 0.5)
    assert [e["fraction"] for e in events] == [0.95]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (42.2, "43 s"), (60, "1 min"), (3599, "1 h"), (3600, "1 h"), (18780, "5 h 13 min"), (400000, "4 d 15 h")],
)
def test_durations(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_money() -> None:
    assert (usd(25), usd(0.21), usd(0.0012), usd(0), usd(1234.5)) == ("$25.00", "$0.21", "$0.0012", "$0.00", "$1,234.50")
