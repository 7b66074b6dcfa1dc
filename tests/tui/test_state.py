"""The dashboard model: what each payload and event does to the figures a user sees."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tui.clock import FrozenClock
from tui.state import Dashboard

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 28, 15, 0, tzinfo=BERLIN).timestamp()


def req(rid: str, ts: float = NOW - 60, **kw: Any) -> dict[str, Any]:
    base = {
        "id": rid, "ts": ts, "requested_model": "claude-opus-4-8", "provider": "anthropic",
        "upstream_model": "claude-opus-4-8", "route": "default", "session_id": "S1", "status": 200,
        "outcome": "ok", "input_tokens": 100, "output_tokens": 20, "cache_read_tokens": 1000,
        "cache_write_tokens": 10, "cost_usd": 0.25, "latency_ms": 900.0,
    }  # fmt: skip
    return base | kw


def status(today_cost: float = 10.0, month_cost: float = 100.0) -> dict[str, Any]:
    return {
        "pid": 1,
        "usage": {
            "timezone": "Europe/Berlin",
            "today": {"key": "2026-11-28", "requests": 5, "input_tokens": 1, "output_tokens": 1, "cache_read_tokens": 0, "cache_write_tokens": 0, "cost_usd": today_cost},
            "month": {"key": "2026-11", "requests": 50, "cost_usd": month_cost},
        },
    }


@pytest.fixture
def model() -> Dashboard:
    m = Dashboard(FrozenClock(NOW), max_rows=4, zone=BERLIN)
    m.set_connection("connected", "http://x")
    return m


def test_a_request_goes_from_in_flight_to_priced_and_is_counted_once(model: Dashboard) -> None:
    model.apply_status(status())
    model.apply_event("request_started", {"id": "r1", "ts": NOW - 61, "model": "claude-opus-4-8", "session_id": "S1", "stream": True})
    assert model.rows["r1"].in_flight and model.in_flight() == 1
    assert model.today.cost_usd == 10.0
    model.apply_event("request", req("r1"))
    model.apply_event("request", req("r1"))  # a repeat must not count twice
    row = model.rows["r1"]
    assert not row.in_flight and row.upstream == "anthropic/claude-opus-4-8" and row.cache_read_tokens == 1000
    assert model.today.cost_usd == pytest.approx(10.25) and model.today.requests == 6
    assert model.month.cost_usd == pytest.approx(100.25)
    assert model.by_model["claude-opus-4-8"].cost_usd == pytest.approx(0.25)
    assert model.by_route["default"].requests == 1
    assert model.sessions["S1"].total_tokens == 1130 and model.session_seen["S1"] == NOW - 60
    assert model.hourly == {14: pytest.approx(0.25)}
    assert list(model.take_row_changes().changed) == ["r1"]


def test_a_poll_replaces_the_optimistic_figures(model: Dashboard) -> None:
    model.apply_event("request", req("r1"))
    model.apply_status(status(today_cost=3.0))
    model.apply_usage("model", [{"key": "claude-sonnet-5", "requests": 2, "cost_usd": 3.0}])
    model.apply_usage("session", [{"key": None, "requests": 2, "cost_usd": 3.0}])
    assert model.today.cost_usd == 3.0 and model.daily["2026-11-28"] == 3.0
    assert set(model.by_model) == {"claude-sonnet-5"} and set(model.sessions) == {"(none)"}
    with pytest.raises(ValueError, match="unknown usage group"):
        model.apply_usage("hourly", [])


def test_a_request_after_local_midnight_starts_a_new_day_and_month(model: Dashboard) -> None:
    model.apply_status(status())
    model.apply_usage("route", [{"key": "default", "requests": 5, "cost_usd": 10.0}])
    first_of_december = datetime(2026, 12, 1, 0, 0, 30, tzinfo=BERLIN).timestamp()
    model.apply_event("request", req("r2", ts=first_of_december, cost_usd=1.5))
    assert model.today_key == "2026-12-01" and model.month_key == "2026-12"
    assert model.today.cost_usd == 1.5 and model.month.cost_usd == 1.5
    assert model.by_route["default"].cost_usd == 1.5 and model.hourly == {0: 1.5}


def test_old_rows_are_dropped_and_a_long_pause_asks_for_a_rebuild(model: Dashboard) -> None:
    for i in range(6):
        model.apply_event("request", req(f"r{i}"))
    assert list(model.rows) == ["r2", "r3", "r4", "r5"]
    changes = model.take_row_changes()
    assert list(changes.changed) == ["r2", "r3", "r4", "r5"] and changes.evicted == ["r0", "r1"]
    for i in range(6, 20):  # more evictions than the table holds, while nobody looked
        model.apply_event("request", req(f"r{i}"))
    assert model.take_row_changes().rebuild


def test_a_lost_connection_leaves_in_flight_rows_lost(model: Dashboard) -> None:
    model.apply_event("request_started", {"id": "r1", "ts": NOW})
    model.set_connection("retrying", "http://x", "refused", retry_at=NOW + 1)
    assert model.rows["r1"].outcome == "lost" and model.in_flight() == 0
    model.apply_event("hello", {"pid": 1})
    model.apply_event("hello", {"pid": 2})
    assert [a.message for a in model.alerts] == ["the sidecar restarted (pid 1 -> 2)"]


def test_routes_breakers_and_missing_features(model: Dashboard) -> None:
    assert model.routes.state == "loading"
    model.apply_feature("cache", None)
    assert model.cache.state == "missing"
    target = {"id": "openai/gpt-5-mini#0", "provider": "openai", "breaker": "closed"}
    model.apply_event("routes_changed", {"routes": [{"name": "cheap", "enabled": True, "targets": [target]}, {"name": "default", "enabled": True}]})
    assert model.routes.state == "ready"
    model.apply_event("breaker", {"target": "openai/gpt-5-mini#0", "route": "cheap", "state": "open"})
    assert model.routes.data["routes"][0]["targets"][0]["breaker"] == "open"
    assert "circuit open for openai/gpt-5-mini#0 on route cheap" in model.alerts[-1].message
    model.apply_route({"name": "cheap", "enabled": False})
    assert [r["enabled"] for r in model.routes.data["routes"]] == [False, True]
    with pytest.raises(ValueError, match="unknown feature"):
        model.apply_feature("sync", {})


def test_malformed_and_unknown_events_are_reported_not_raised(model: Dashboard) -> None:
    model.apply_event("request", ["not", "an", "object"])
    model.apply_event("request", {"ts": NOW})  # no id
    model.apply_event("breaker", {"route": "x"})  # no target
    model.apply_event("from_the_future", {"anything": 1})
    assert model.bad_events == 3 and not model.rows
    assert [a.severity for a in model.alerts] == ["warning"] * 3
    assert "malformed 'request' event" in model.alerts[1].message


def test_budgets_move_with_requests_until_they_reset(model: Dashboard) -> None:
    day = {"period": "day", "limit_usd": 25.0, "spent_usd": 20.0, "resets_at": "2026-11-29T00:00:00+01:00"}
    old = {"period": "month", "limit_usd": 400.0, "spent_usd": 10.0, "resets_at": "2026-11-28T00:00:00+01:00"}
    model.apply_feature("policy", {"configured": True, "budgets": [day, old]})
    model.apply_event("request", req("r1", cost_usd=1.0))
    assert day["spent_usd"] == 21.0 and old["spent_usd"] == 10.0
    model.apply_event("budget_threshold", {"period": "day", "fraction": 0.8, "spent_usd": 20.5, "limit_usd": 25.0})
    assert day["spent_usd"] == 20.5
    assert model.alerts[-1].severity == "warning" and model.alerts[-1].message == "day budget 80% used ($20.50 of $25.00)"


def test_burn_rate_and_projection(model: Dashboard) -> None:
    clock = model.clock
    assert isinstance(clock, FrozenClock)
    model.live_since = NOW - 2 * 3600
    model.apply_status(status(today_cost=0.0))
    model.apply_event("request", req("old", ts=NOW - 3700, cost_usd=5.0))  # outside the hour
    model.apply_event("request", req("r1", ts=NOW - 600, cost_usd=1.0))
    model.apply_event("request", req("r2", ts=NOW - 60, cost_usd=2.0))
    assert model.burn_rate() == pytest.approx(3.0)
    assert model.projected_today() == pytest.approx(8.0 + 3.0 * 9)  # 15:00 to midnight
    model.live_since = NOW - 60  # just opened: the hour is not extrapolated from one minute
    assert model.burn_rate() == pytest.approx(3.0 * 6)


def test_ratelimit_event_sets_the_plan(model: Dashboard) -> None:
    model.apply_event("ratelimit", {"unified": {"anthropic-ratelimit-unified-5h-utilization": "0.3"}})
    assert model.plan is not None and model.plan.windows[0].utilization == 0.3


def test_history_fills_the_table_beside_live_rows_without_counting_twice(model: Dashboard) -> None:
    model.apply_status(status(today_cost=10.0))
    model.apply_event("request", req("live", ts=NOW - 10, cost_usd=1.0))
    model.take_row_changes()
    # Newest first, as /requests answers; "live" was seen already, "r0" is older than max_rows keeps.
    history = [req("live", ts=NOW - 10, cost_usd=1.0), req("r3", ts=NOW - 30), req("r2", ts=NOW - 40),
               req("r1", ts=NOW - 50), req("r0", ts=NOW - 60)]  # fmt: skip

    model.apply_history(history)

    assert list(model.rows) == ["r1", "r2", "r3", "live"]  # oldest first, bounded by max_rows
    assert model.take_row_changes().rebuild
    assert model.today.cost_usd == 11.0  # the ledger's total plus the live one; history adds nothing
    model.apply_history(history)
    assert not model.take_row_changes().rebuild  # nothing new


def test_burn_rate_reads_the_ledgers_hour_at_once(model: Dashboard) -> None:
    model.live_since = NOW - 5  # the dashboard has just opened
    model.apply_event("request", req("live", ts=NOW - 2, cost_usd=1.0))
    spend = [{"id": "live", "ts": NOW - 2, "cost_usd": 1.0}, {"id": "a", "ts": NOW - 1800, "cost_usd": 2.0},
             {"id": "b", "ts": NOW - 3500, "cost_usd": 3.0}]  # fmt: skip

    model.apply_recent_spend(spend, NOW - 3600, complete=True)

    assert model.burn_rate() == pytest.approx(6.0)  # $6 in the last hour, however long the dashboard was open
    clock = model.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(200)
    assert model.burn_rate() == pytest.approx(3.0)  # "b" left the window


def test_a_cut_burn_history_covers_only_what_it_holds(model: Dashboard) -> None:
    model.apply_recent_spend([{"id": "a", "ts": NOW - 60, "cost_usd": 1.0}, {"id": "b", "ts": NOW - 1200, "cost_usd": 1.0}],
                             NOW - 3600, complete=False)  # fmt: skip
    assert model.burn_rate() == pytest.approx(2.0 / 1200 * 3600)


def test_count_tokens_calls_are_counted_apart(model: Dashboard) -> None:
    model.apply_event("request", req("c", endpoint="/v1/messages/count_tokens", cost_usd=0.0))
    model.apply_event("request", req("m", endpoint="/v1/messages"))
    assert (model.today.requests, model.today.count_tokens) == (1, 1)
    assert model.rows["c"].is_count_tokens and not model.rows["m"].is_count_tokens
