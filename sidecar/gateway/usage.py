"""`GET /api/oauth/usage`: the dollars Claude Code shows in `/usage` and its status line.

With budgets, `extra_usage` describes the cap the unified headers describe (the fullest)
and `limits` has one row per cap; `resets_at` is the same second as that cap's
`anthropic-ratelimit-unified-overage-reset`, since the client pairs the dollars with the
percent only when they agree. Without a budget, `limits` is empty and `extra_usage` holds
the spend in cents for the current UTC month, day and week (from Monday), limits null.
Amounts are cents; percents are whole (above 100 once over).
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from sidecar.appkeys import PATHS
from sidecar.gateway.unified import PERIOD_NAMES, Cap, fullest
from sidecar.policy.budgets import period_bounds
from sidecar.policy.control import POLICY
from sidecar.policy.gate import spent_since

_UTC_ZONE = ZoneInfo("UTC")


def cents(usd: float) -> int:
    """USD as whole cents."""
    return round(usd * 100)


def percent(fraction: float) -> int:
    """A fraction as the whole percent the header's two decimals show."""
    return math.floor(max(fraction, 0.0) * 100 + 1e-9)


def iso(epoch: float) -> str:
    """`2026-10-01T00:00:00.000Z`, to the second of the header's reset."""
    return datetime.fromtimestamp(math.ceil(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def severity(fraction: float) -> str:
    """How urgent a cap's standing is, at the client's notice thresholds."""
    return "critical" if fraction >= 0.95 else "warning" if fraction >= 0.75 else "normal"


def with_caps(caps: list[Cap]) -> dict[str, Any]:
    """The document for a user with budgets."""
    top = fullest(caps)
    assert top is not None
    return {
        "extra_usage": {
            "is_enabled": True,
            "monthly_limit": cents(top.limit),
            "used_credits": cents(top.spent),
            "utilization": percent(top.fraction),
            "currency": "USD",
        },
        "limits": [
            {
                "kind": "spend",
                "group": PERIOD_NAMES[c.period],
                "percent": percent(c.fraction),
                "resets_at": iso(c.resets_at),
                "severity": severity(c.fraction),
                "is_active": c is top,
            }
            for c in caps
        ],
    }


def without_caps(month: float, day: float, week: float) -> dict[str, Any]:
    """The document for a user with no budget: spend only."""

    def amount(spent: float) -> dict[str, Any]:
        return {"limit": None, "used_credits": cents(spent), "utilization": None}

    return {
        "extra_usage": {
            "is_enabled": True,
            "monthly_limit": None,
            "used_credits": cents(month),
            "utilization": None,
            "currency": "USD",
            "daily": amount(day),
            "weekly": amount(week),
        },
        "limits": [],
    }


async def oauth_usage(request: web.Request) -> web.Response:
    """The caller's caps in dollars (module docstring)."""
    gate = request.app.get(POLICY)
    if gate is not None and gate.budgets.configured:
        doc = with_caps(gate.budgets.caps())
    else:
        now = datetime.now(UTC).timestamp()
        read = spent_since(request.app[PATHS].db_file)

        def spends() -> tuple[float, float, float]:
            month, day, week = (read(period_bounds(p, now, _UTC_ZONE)[0]) for p in ("month", "day", "week"))
            return month, day, week

        doc = without_caps(*await asyncio.to_thread(spends))
    return web.json_response(doc, headers={"cache-control": "no-store"})
