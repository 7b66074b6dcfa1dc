"""What the tray shows, as one immutable value built from the control API's answers.

The rendering functions (`tray.render`, `tray.menu`) read only a `TrayState`, so they are
pure and testable without a display. `state_from_api` turns the JSON of `/status`,
`/routes`, `/policy` and `/cache` into one; an endpoint the sidecar does not have yet is
passed as None and simply not shown.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidecar.sync import status as sync_status

# Where a budget turns amber when the policy names no thresholds of its own.
DEFAULT_WARN_FRACTION = 0.8


class Level(enum.Enum):
    """The icon's overall look, from calm to alarming."""

    OK = "ok"
    WARN = "warn"
    OVER = "over"
    PAUSED = "paused"
    DOWN = "down"


class BadAnswer(ValueError):
    """A control API answer that does not have the documented shape."""


@dataclass(frozen=True)
class Budget:
    """One budget period from `/sidecar/v1/policy`."""

    period: str
    limit_usd: float
    spent_usd: float
    thresholds: tuple[float, ...] = ()
    resets_at: str | None = None

    @property
    def fraction(self) -> float:
        """How much of the budget is spent (1.0 = all of it)."""
        return self.spent_usd / self.limit_usd if self.limit_usd > 0 else 0.0

    @property
    def warn_at(self) -> float:
        """The fraction where this budget starts to look amber."""
        return min(self.thresholds) if self.thresholds else DEFAULT_WARN_FRACTION


@dataclass(frozen=True)
class Route:
    """One route from `/sidecar/v1/routes`: on or off, and where it last sent a request."""

    name: str
    enabled: bool
    last_upstream: str | None = None
    degraded: bool = False  # some target's breaker is open


@dataclass(frozen=True)
class Cache:
    """The response cache from `/sidecar/v1/cache`."""

    mode: str
    hit_rate: float | None = None

    @property
    def on(self) -> bool:
        """True unless the cache is off."""
        return self.mode != "off"


@dataclass(frozen=True)
class TrayState:
    """Everything the icon, its title and its menu show.

    `routes`, `budgets` and `cache` are None when the sidecar has no such endpoint (or is
    down); an empty tuple means the endpoint answered with nothing configured.
    """

    running: bool
    address: str | None = None
    today_usd: float = 0.0
    today_requests: int = 0
    month_usd: float = 0.0
    in_flight: int = 0
    routes: tuple[Route, ...] | None = None
    budgets: tuple[Budget, ...] | None = None
    cache: Cache | None = None
    problem: str | None = None  # why the sidecar is down, in a few words
    sync: str | None = None  # the org sync in a few words; None: not enrolled

    @property
    def paused(self) -> bool:
        """Routes are configured and every one of them is switched off."""
        return bool(self.routes) and not any(r.enabled for r in self.routes or ())

    @property
    def fullest(self) -> Budget | None:
        """The budget closest to (or furthest past) its limit."""
        budgets = [b for b in self.budgets or () if b.limit_usd > 0]
        return max(budgets, key=lambda b: b.fraction) if budgets else None

    @property
    def level(self) -> Level:
        """The icon's look: down, paused, over budget, warning, or fine."""
        if not self.running:
            return Level.DOWN
        if self.paused:
            return Level.PAUSED
        worst = self.fullest
        if worst is None:
            return Level.OK
        if worst.fraction >= 1.0:
            return Level.OVER
        return Level.WARN if worst.fraction >= worst.warn_at else Level.OK


def down(problem: str) -> TrayState:
    """The state when no sidecar answers; `problem` says why in a few words."""
    return TrayState(running=False, problem=problem)


def state_from_api(
    status: Mapping[str, Any],
    routes: Mapping[str, Any] | None = None,
    policy: Mapping[str, Any] | None = None,
    cache: Mapping[str, Any] | None = None,
) -> TrayState:
    """Build the state from the control API's JSON answers; raises BadAnswer on a wrong shape."""
    usage = _mapping(status.get("usage", {}), "status.usage")
    today = _mapping(usage.get("today", {}), "status.usage.today")
    month = _mapping(usage.get("month", {}), "status.usage.month")
    return TrayState(
        running=True,
        address=_opt_str(status.get("address"), "status.address"),
        today_usd=_number(today.get("cost_usd", 0), "status.usage.today.cost_usd"),
        today_requests=int(_number(today.get("requests", 0), "status.usage.today.requests")),
        month_usd=_number(month.get("cost_usd", 0), "status.usage.month.cost_usd"),
        in_flight=int(_number(status.get("in_flight", 0), "status.in_flight")),
        routes=None if routes is None else _routes(routes),
        budgets=None if policy is None else _budgets(policy),
        cache=None if cache is None else _cache(cache),
        sync=_sync(status.get("sync")),
    )


def _sync(sync: Any) -> str | None:
    if not isinstance(sync, Mapping) or not sync.get("enrolled"):
        return None
    return sync_status.headline(sync).removeprefix("sync: ")


def _routes(body: Mapping[str, Any]) -> tuple[Route, ...]:
    items = body.get("routes")
    if not isinstance(items, list):
        raise BadAnswer("routes: expected a list under 'routes'")
    out = []
    for i, raw in enumerate(items):
        r = _mapping(raw, f"routes[{i}]")
        targets = [*(r.get("targets") or []), *(r.get("fallbacks") or [])]
        out.append(
            Route(
                name=_str(r.get("name"), f"routes[{i}].name"),
                enabled=bool(r.get("enabled", True)),
                last_upstream=_opt_str(r.get("last_upstream"), f"routes[{i}].last_upstream"),
                degraded=any(isinstance(t, dict) and t.get("breaker") == "open" for t in targets),
            )
        )
    return tuple(out)


def _budgets(body: Mapping[str, Any]) -> tuple[Budget, ...]:
    if not body.get("configured", False):
        return ()
    items = body.get("budgets") or []
    if not isinstance(items, list):
        raise BadAnswer("policy.budgets: expected a list")
    out = []
    for i, raw in enumerate(items):
        b = _mapping(raw, f"policy.budgets[{i}]")
        where = f"policy.budgets[{i}]"
        thresholds = b.get("thresholds") or []
        if not isinstance(thresholds, list):
            raise BadAnswer(f"{where}.thresholds: expected a list")
        out.append(
            Budget(
                period=_str(b.get("period"), f"{where}.period"),
                limit_usd=_number(b.get("limit_usd"), f"{where}.limit_usd"),
                spent_usd=_number(b.get("spent_usd", 0), f"{where}.spent_usd"),
                thresholds=tuple(sorted(_number(t, f"{where}.thresholds") for t in thresholds)),
                resets_at=_opt_str(b.get("resets_at"), f"{where}.resets_at"),
            )
        )
    return tuple(out)


def _cache(body: Mapping[str, Any]) -> Cache:
    rate = body.get("hit_rate")
    return Cache(
        mode=_str(body.get("mode", "off"), "cache.mode"),
        hit_rate=None if rate is None else _number(rate, "cache.hit_rate"),
    )


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise BadAnswer(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadAnswer(f"{where}: expected a number, got {value!r}")
    return float(value)


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise BadAnswer(f"{where}: expected a string, got {value!r}")
    return value


def _opt_str(value: Any, where: str) -> str | None:
    return None if value is None else _str(value, where)
