"""Budgets per developer for the calendar day, week and month, with reservations.

Before a request goes upstream it reserves its estimated cost in every budget; it is
refused when the reservation does not fit next to what was spent and what requests in
flight have reserved. After the response the reservation is settled with the real cost.
So concurrent requests can overshoot a budget only by what their real cost exceeds their
reservations (never by whole requests, as a check-then-deduct scheme allows). The policy
gate reserves the worst case the provider can bill (see `sidecar.policy.estimate`), so that
excess is bounded by the input-token estimation error of the requests in flight; a request
whose worst case does not fit what is left gets a lower `max_tokens` instead
(`reserve_output`), down to a floor below which it is refused.

Periods are cut in the configured time zone: a day starts at local midnight, a week on
Monday, a month on the 1st (like `claude-sidecar usage`). Spend is attributed to the
period in which the request started, as the ledger does, so the two always agree; at
start the spend so far is read from the ledger.

A request that cannot fit until a period resets, or that alone is larger than a budget,
gets Claude Code's gateway-protocol refusal: 429 `billing_error`, `x-should-retry: false`,
`retry-after` set to the reset, the unified rejection headers (sidecar.gateway.unified) and
one sentence saying which budget, when it resets and what to do; Claude Code stops at once
and prints it. A request that would fit once requests in flight settle gets a short
`retry-after` (429 `rate_limit_error`) instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

from sidecar.errors import BudgetExhausted, RateLimited
from sidecar.gateway.unified import Cap, rejection
from sidecar.policy.config import BudgetConfig

PERIODS = ("day", "week", "month")
_LIMIT_KEY = {"day": "daily_usd", "week": "weekly_usd", "month": "monthly_usd"}
_ADJECTIVE = {"day": "daily", "week": "weekly", "month": "monthly"}
_SO_FAR = {"day": "today", "week": "this week", "month": "this month"}
SETTLE_RETRY_SECONDS = 5  # retry-after while requests in flight hold the room

Clock = Callable[[], float]
ThresholdHook = Callable[[dict[str, Any]], None]


def period_bounds(period: str, at: float, tz: ZoneInfo) -> tuple[float, float]:
    """Epoch seconds of the start and end of the `period` (day, week, month) holding `at`."""
    today = datetime.fromtimestamp(at, tz).date()
    if period == "day":
        start, end = today, today + timedelta(days=1)
    elif period == "week":
        start = today - timedelta(days=today.weekday())
        end = start + timedelta(days=7)
    elif period == "month":
        start = today.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown budget period {period!r}")
    return _midnight(start, tz), _midnight(end, tz)


def _midnight(day: date, tz: ZoneInfo) -> float:
    """The first instant of local `day` (also when DST skips its midnight)."""
    return datetime.combine(day, dtime.min, tzinfo=tz).timestamp()


def usd(amount: float) -> str:
    """Dollars for a message: cents, or four decimals below a cent."""
    return f"${amount:.4f}" if 0 < abs(amount) < 0.01 else f"${amount:,.2f}"


def duration(seconds: float) -> str:
    """A wait for a message: `42 s`, `12 min`, `5 h 12 min`, `3 d 4 h`."""
    s = max(0, math.ceil(seconds))
    if s < 60:
        return f"{s} s"
    m = math.ceil(s / 60)
    if m < 60:
        return f"{m} min"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(h, 24)
    return f"{d} d {h} h" if h else f"{d} d"


@dataclass
class Window:
    """One budget in its current period."""

    period: str
    limit: float
    start: float = 0.0
    end: float = 0.0
    spent: float = 0.0
    reserved: float = 0.0
    in_flight: int = 0
    fired: set[float] = field(default_factory=set)  # thresholds announced this period


@dataclass(frozen=True)
class Reservation:
    """What one request holds in the budgets until it settles."""

    amount: float
    at: float
    starts: dict[str, float]  # period -> start of the window it was counted in


class Budgets:
    """The day, week and month budgets of this developer."""

    def __init__(self, cfg: BudgetConfig, tz: ZoneInfo, clock: Clock = time.time, on_threshold: ThresholdHook | None = None) -> None:
        self.tz = tz
        self.thresholds = cfg.thresholds
        self.clock = clock
        self.on_threshold = on_threshold
        self.windows = [Window(p, float(getattr(cfg, _LIMIT_KEY[p]))) for p in PERIODS if getattr(cfg, _LIMIT_KEY[p]) is not None]
        self._roll(clock())

    @property
    def configured(self) -> bool:
        """Whether any budget is set."""
        return bool(self.windows)

    def load(self, spent_since: Callable[[float], float]) -> None:
        """Take the spend so far from the ledger (`spent_since(epoch)`), announcing nothing."""
        self._roll(self.clock())
        for w in self.windows:
            w.spent = spent_since(w.start)
            w.fired = {t for t in self.thresholds if w.spent >= t * w.limit}

    def reconfigure(self, cfg: BudgetConfig, spent_since: Callable[[float], float] | None = None) -> bool:
        """Take new limits and thresholds, keeping what was spent and what is reserved.

        A period that was not budgeted needs its spend so far from the ledger
        (`spent_since(epoch)`, as `load` takes it); without that reader adding one is
        refused (False, nothing changed). A new period also counts at least what a budgeted
        period inside it has seen (spend the ledger may not have written yet); requests in
        flight when it is added settle only in the periods they reserved in.
        """
        limits = {p: float(getattr(cfg, _LIMIT_KEY[p])) for p in PERIODS if getattr(cfg, _LIMIT_KEY[p]) is not None}
        have = {w.period for w in self.windows}
        if not set(limits) <= have and spent_since is None:
            return False
        self.thresholds = cfg.thresholds
        added = [Window(p, limit) for p, limit in limits.items() if p not in have]
        now = self.clock()
        for w in added:
            w.start, w.end = period_bounds(w.period, now, self.tz)
            inside = [o.spent for o in self.windows if o.start >= w.start and o.end <= w.end]
            w.spent = max([spent_since(w.start) if spent_since is not None else 0.0, *inside])
        order = {p: i for i, p in enumerate(PERIODS)}
        self.windows = sorted([w for w in self.windows if w.period in limits] + added, key=lambda w: order[w.period])
        for w in self.windows:
            w.limit = limits[w.period]
            w.fired = {t for t in self.thresholds if w.spent >= t * w.limit}
        return True

    def reserve(self, amount: float) -> Reservation:
        """Hold `amount` USD in every budget, or raise why it does not fit."""
        now = self.clock()
        self._roll(now)
        for w in self.windows:
            if amount > w.limit:
                raise self._too_large(w, amount, now)
        exhausted = [w for w in self.windows if w.spent + amount > w.limit]
        if exhausted:
            raise self._exhausted(max(exhausted, key=lambda w: w.end), amount, now)
        crowded = [w for w in self.windows if w.spent + w.reserved + amount > w.limit]
        if crowded:
            w = crowded[0]
            raise RateLimited(
                f"{_ADJECTIVE[w.period]} budget: {usd(w.spent)} of {usd(w.limit)} spent {_SO_FAR[w.period]} and "
                f"{usd(w.reserved)} held by {w.in_flight} request(s) in flight; this request needs about "
                f"{usd(amount)}, so it waits for them to finish",
                headers={"retry-after": str(SETTLE_RETRY_SECONDS)},
            )
        for w in self.windows:
            w.reserved += amount
            w.in_flight += 1
        return Reservation(amount, now, {w.period: w.start for w in self.windows})

    def reserve_output(self, base: float, per_token: float, wanted: int, floor: int) -> tuple[Reservation, int]:
        """Hold `base` USD plus `wanted` output tokens at `per_token` USD each in every budget.

        When that does not fit what is left, hold as many output tokens as fit, down to
        `floor` (the caller lowers the request's max_tokens to match). Return the
        reservation and the output tokens it covers; raise as `reserve` does when not even
        `floor` tokens (or `wanted`, if fewer) fit.
        """
        self._roll(self.clock())
        tokens = wanted
        if per_token > 0 and not self._fits(base + wanted * per_token):
            room = min(w.limit - w.spent - w.reserved for w in self.windows)
            fit = max(0, min(wanted - 1, math.floor((room - base) / per_token)))
            while fit > 0 and not self._fits(base + fit * per_token):
                fit -= 1  # float rounding: never reserve a hair more than the room
            tokens = max(fit, min(wanted, floor))
        return self.reserve(base + tokens * per_token), tokens

    def _fits(self, amount: float) -> bool:
        return all(w.spent + w.reserved + amount <= w.limit for w in self.windows)

    def settle(self, res: Reservation, cost: float) -> None:
        """Release `res` and book the request's real `cost` in the period it started in."""
        self._roll(self.clock())
        for w in self.windows:
            if res.starts.get(w.period) != w.start:
                continue  # it started in a period that has ended: that spend is history
            w.in_flight -= 1
            w.reserved = w.reserved - res.amount if w.in_flight else 0.0
            w.spent += cost
            self._announce(w)

    def caps(self) -> list[Cap]:
        """Each budget's standing for the unified headers and /api/oauth/usage."""
        self._roll(self.clock())
        return [Cap(w.period, w.limit, w.spent, w.end) for w in self.windows]

    def state(self) -> list[dict[str, Any]]:
        """Each budget's limit, spend, reservations and reset (for the control API)."""
        self._roll(self.clock())
        return [
            {
                "period": w.period,
                "limit_usd": w.limit,
                "spent_usd": round(w.spent, 9),
                "reserved_usd": round(w.reserved, 9),
                "in_flight": w.in_flight,
                "resets_at": datetime.fromtimestamp(w.end, self.tz).isoformat(),
                "thresholds": list(self.thresholds),
            }
            for w in self.windows
        ]

    def _roll(self, now: float) -> None:
        for w in self.windows:
            if not w.start <= now < w.end:
                w.start, w.end = period_bounds(w.period, now, self.tz)
                w.spent = w.reserved = 0.0
                w.in_flight = 0
                w.fired = set()

    def _announce(self, w: Window) -> None:
        for t in self.thresholds:
            if t not in w.fired and w.spent >= t * w.limit:
                w.fired.add(t)
                if self.on_threshold is not None:
                    self.on_threshold(
                        {
                            "period": w.period,
                            "fraction": t,
                            "spent_usd": round(w.spent, 9),
                            "limit_usd": w.limit,
                            "resets_at": datetime.fromtimestamp(w.end, self.tz).isoformat(),
                        }
                    )

    def _exhausted(self, w: Window, amount: float, now: float) -> BudgetExhausted:
        spent = f"{usd(w.spent)} spent {_SO_FAR[w.period]}"
        state = f"is used up ({spent})" if w.spent >= w.limit else f"cannot fit this request (about {usd(amount)}, with {spent})"
        message = (
            f"the {_ADJECTIVE[w.period]} budget of {usd(w.limit)} {state}; "
            f"{self._resets(w, now)}, so wait until then or raise budget.{_LIMIT_KEY[w.period]} in the sidecar's config."
        )
        return BudgetExhausted(message, headers=rejection(self._cap(w), now))

    def _too_large(self, w: Window, amount: float, now: float) -> BudgetExhausted:
        message = (
            f"this request needs about {usd(amount)}, more than the whole {_ADJECTIVE[w.period]} budget of "
            f"{usd(w.limit)}, so it cannot run even after the budget {self._resets(w, now)[3:]}; lower max_tokens, "
            f"shorten the conversation (/compact) or raise budget.{_LIMIT_KEY[w.period]} in the sidecar's config."
        )
        return BudgetExhausted(message, headers=rejection(self._cap(w), now))

    def _resets(self, w: Window, now: float) -> str:
        """`it resets at 2026-11-26 00:00 Asia/Kolkata (in 5 h 13 min)`."""
        reset = datetime.fromtimestamp(w.end, self.tz)
        return f"it resets at {reset:%Y-%m-%d %H:%M} {self.tz.key} (in {duration(w.end - now)})"

    def _cap(self, w: Window) -> Cap:
        return Cap(w.period, w.limit, w.spent, w.end)
