"""The `anthropic-ratelimit-unified-*` headers that make Claude Code show a spend cap as its own.

Claude Code's gateway protocol (2.1.225 and later, signed in to a gateway) reads the same
headers api.anthropic.com sends its subscribers. On a successful response to a user with a
cap (`standing`): `-status` `allowed` or `allowed_warning`, `-representative-claim: overage`,
`-overage-status`, `-overage-utilization` (a fraction, two decimals, below 1 while allowing),
`-overage-surpassed-threshold` (0.75 or 0.95, which triggers the client's "You've used NN%
of your usage credits" notice) and the reset in Unix seconds. When the cap is reached
(`rejection`): `-status: rejected`, utilisation and threshold 1, the period and
`-overage-disabled-reason: org_spend_cap_reached`, and *not* `-representative-claim` or
`-overage-status`, which would make the client replace the sidecar's message with its own.

When several caps apply the fullest one is described; once blocked, the one that resets last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PREFIX = "anthropic-ratelimit-unified-"
UPSTREAM_PREFIX = "anthropic-ratelimit-"  # the upstream's own quota headers, dropped when ours apply
THRESHOLDS = (0.75, 0.95)  # the fractions the client announces
PERIOD_NAMES = {"day": "daily", "week": "weekly", "month": "monthly"}


@dataclass(frozen=True)
class Cap:
    """One budget's standing: its period (day, week, month), limit, spend and reset (epoch s)."""

    period: str
    limit: float
    spent: float
    resets_at: float

    @property
    def fraction(self) -> float:
        """How much of the cap is used (0 for a zero cap that nothing was spent of)."""
        if self.limit <= 0:
            return 1.0 if self.spent > 0 else 0.0
        return self.spent / self.limit


def fullest(caps: list[Cap]) -> Cap | None:
    """The cap the headers describe: the fullest; of equally full ones, the one resetting last."""
    return max(caps, key=lambda c: (c.fraction, c.resets_at), default=None)


def utilization(fraction: float) -> str:
    """A fraction as the header's two decimals, kept below 1 (the cap still allows requests)."""
    return f"{min(math.floor(max(fraction, 0.0) * 100) / 100, 0.99):.2f}"


def surpassed(fraction: float) -> float | None:
    """The highest protocol threshold `fraction` has reached, or None below the first."""
    reached = [t for t in THRESHOLDS if fraction >= t]
    return reached[-1] if reached else None


def standing(cap: Cap) -> dict[str, str]:
    """The headers of a successful response for a user whose fullest cap is `cap`."""
    threshold = surpassed(cap.fraction)
    status = "allowed" if threshold is None else "allowed_warning"
    reset = str(math.ceil(cap.resets_at))
    out = {
        PREFIX + "status": status,
        PREFIX + "representative-claim": "overage",
        PREFIX + "overage-status": status,
        PREFIX + "overage-utilization": utilization(cap.fraction),
        PREFIX + "reset": reset,
        PREFIX + "overage-reset": reset,
    }
    if threshold is not None:
        out[PREFIX + "overage-surpassed-threshold"] = f"{threshold:.2f}"
    return out


def rejection(cap: Cap, now: float, *, group_pool: bool = False) -> dict[str, str]:
    """The headers of the 429 `billing_error` that refuses a request because `cap` is reached."""
    reset = math.ceil(cap.resets_at)
    out = {
        "retry-after": str(max(1, math.ceil(cap.resets_at - now))),
        "x-should-retry": "false",
        PREFIX + "status": "rejected",
        PREFIX + "reset": str(reset),
        PREFIX + "overage-reset": str(reset),
        PREFIX + "overage-utilization": "1",
        PREFIX + "overage-surpassed-threshold": "1",
        PREFIX + "overage-period": "monthly" if group_pool else PERIOD_NAMES[cap.period],
        PREFIX + "overage-disabled-reason": "org_spend_cap_reached",
    }
    if group_pool:
        out[PREFIX + "overage-scope"] = "group_pool"
    return out
