"""Building the tray's state from the control API's answers, and the level it shows."""

from __future__ import annotations

from typing import Any

import pytest

from tray.state import BadAnswer, Budget, Level, Route, TrayState, down, state_from_api

STATUS: dict[str, Any] = {
    "pid": 4242,
    "address": "http://127.0.0.1:8787",
    "in_flight": 2,
    "usage": {
        "today": {"cost_usd": 3.2, "requests": 12},
        "month": {"cost_usd": 45.1, "requests": 300},
    },
}
ROUTES = {
    "routes": [
        {
            "name": "background-cheap",
            "enabled": True,
            "match": {"scenario": "background"},
            "targets": [{"id": "openai/gpt-5-mini#0", "provider": "openai", "breaker": "open"}],
            "fallbacks": [{"id": "anthropic#0", "provider": "anthropic", "breaker": "closed"}],
            "last_upstream": "openai/gpt-5-mini",
        },
        {
            "name": "default",
            "enabled": False,
            "targets": [],
            "fallbacks": [],
            "last_upstream": None,
        },
    ]
}
POLICY = {
    "configured": True,
    "budgets": [
        {
            "period": "day",
            "limit_usd": 25.0,
            "spent_usd": 3.2,
            "reserved_usd": 0.4,
            "resets_at": "2026-11-29T00:00:00+01:00",
            "thresholds": [0.95, 0.8],
        },
        {"period": "month", "limit_usd": 400.0, "spent_usd": 45.1, "thresholds": []},
    ],
}


def test_every_endpoint_answered() -> None:
    state = state_from_api(STATUS, ROUTES, POLICY, {"mode": "semantic", "hit_rate": 0.173})

    assert state.running and state.address == "http://127.0.0.1:8787"
    assert (state.today_usd, state.today_requests, state.month_usd, state.in_flight) == (
        3.2,
        12,
        45.1,
        2,
    )
    assert state.routes == (
        Route("background-cheap", True, "openai/gpt-5-mini", degraded=True),
        Route("default", False, None),
    )
    assert state.budgets == (
        Budget("day", 25.0, 3.2, (0.8, 0.95), "2026-11-29T00:00:00+01:00"),
        Budget("month", 400.0, 45.1, (), None),
    )
    assert state.cache is not None and state.cache.on and state.cache.hit_rate == 0.173
    assert state.level is Level.OK


def test_a_sidecar_without_routes_policy_or_cache_endpoints() -> None:
    state = state_from_api(STATUS)

    assert (state.routes, state.budgets, state.cache) == (None, None, None)
    assert state.level is Level.OK


def test_a_fresh_sidecar_with_no_usage_yet() -> None:
    state = state_from_api({"address": "http://127.0.0.1:1", "usage": {}, "in_flight": 0})

    assert (state.today_usd, state.today_requests, state.month_usd) == (0.0, 0, 0.0)


def test_nothing_configured() -> None:
    state = state_from_api(STATUS, {"routes": []}, {"configured": False}, {"mode": "off"})

    assert state.routes == () and state.budgets == ()
    assert state.cache is not None and not state.cache.on
    assert not state.paused
    assert state.level is Level.OK


@pytest.mark.parametrize(
    ("spent", "thresholds", "level"),
    [
        (0.0, (), Level.OK),
        (79.99, (), Level.OK),
        (80.0, (), Level.WARN),  # no thresholds: amber from 80 %
        (49.0, (0.5, 0.9), Level.OK),
        (50.0, (0.5, 0.9), Level.WARN),  # the lowest threshold turns it amber
        (99.99, (0.5, 0.9), Level.WARN),
        (100.0, (0.5, 0.9), Level.OVER),
        (250.0, (), Level.OVER),
    ],
)
def test_level_follows_the_fullest_budget(
    spent: float, thresholds: tuple[float, ...], level: Level
) -> None:
    calm = Budget("month", 1000.0, 1.0)
    state = TrayState(running=True, budgets=(calm, Budget("day", 100.0, spent, thresholds)))

    assert state.level is level
    assert state.fullest == (calm if spent == 0 else state.budgets[1])  # type: ignore[index]


def test_paused_when_every_route_is_off_and_down_above_all() -> None:
    off = (Route("a", False), Route("b", False))
    over = (Budget("day", 1.0, 5.0),)

    assert TrayState(running=True, routes=off, budgets=over).level is Level.PAUSED
    assert (
        TrayState(running=True, routes=(Route("a", False), Route("b", True)), budgets=over).level
        is Level.OVER
    )
    assert down("not running").level is Level.DOWN
    assert down("not running").problem == "not running"


@pytest.mark.parametrize(
    ("status", "routes", "policy", "where"),
    [
        ({"usage": {"today": {"cost_usd": "3.20"}}}, None, None, "status.usage.today.cost_usd"),
        ({"usage": []}, None, None, "status.usage"),
        ({"in_flight": True}, None, None, "status.in_flight"),
        (STATUS, {"routes": {"a": 1}}, None, "routes"),
        (STATUS, {"routes": [{"enabled": True}]}, None, "routes[0].name"),
        (
            STATUS,
            None,
            {"configured": True, "budgets": [{"period": "day"}]},
            "policy.budgets[0].limit_usd",
        ),
        (
            STATUS,
            None,
            {"configured": True, "budgets": [{"period": "day", "limit_usd": 1, "thresholds": 0.8}]},
            "thresholds",
        ),
    ],
)
def test_a_wrong_shape_is_named(
    status: dict[str, Any], routes: Any, policy: Any, where: str
) -> None:
    with pytest.raises(BadAnswer, match=where.replace("[", r"\[").replace("]", r"\]")):
        state_from_api(status, routes, policy)
