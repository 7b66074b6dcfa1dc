"""Plan utilization from Anthropic's `anthropic-ratelimit-unified-*` response headers.

A subscription's answers carry headers such as ``anthropic-ratelimit-unified-5h-utilization:
0.42`` and ``...-5h-reset: 1764345600`` (one group per window: 5h, 7d, 7d_opus, ...), plus
an overall ``-status`` and ``-representative-claim``. They are unofficial, so anything not
understood is ignored rather than shown wrong. The sidecar forwards them in `ratelimit`
events, with or without the ``anthropic-ratelimit-unified-`` prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

PREFIX = "anthropic-ratelimit-unified-"
_WINDOW_FIELDS = ("utilization", "reset", "status")
_OVERALL = {"status", "reset", "representative-claim", "fallback-percentage"}


@dataclass(frozen=True)
class PlanWindow:
    """One rate-limit window of the plan: how much of it is used and when it resets."""

    name: str
    utilization: float | None = None  # 0..1
    resets_at: float | None = None  # epoch seconds
    status: str | None = None  # allowed | allowed_warning | rejected


@dataclass(frozen=True)
class PlanUsage:
    """The latest plan utilization the sidecar saw."""

    windows: tuple[PlanWindow, ...] = ()
    status: str | None = None
    representative_claim: str | None = None
    overage_status: str | None = None
    updated_at: float = 0.0


def parse_unified(headers: dict[str, Any], now: float) -> PlanUsage:
    """Read the unified rate-limit headers (prefixed or not) into a PlanUsage."""
    flat = {str(k).lower().removeprefix(PREFIX): str(v) for k, v in headers.items() if v is not None}
    windows: dict[str, dict[str, str]] = {}
    for key, value in flat.items():
        if key in _OVERALL or key.startswith("overage-"):
            continue
        name, _, part = key.rpartition("-")
        if name and part in _WINDOW_FIELDS:
            windows.setdefault(name, {})[part] = value
    return PlanUsage(
        windows=tuple(_window(name, fields) for name, fields in sorted(windows.items(), key=_window_order)),
        status=flat.get("status"),
        representative_claim=flat.get("representative-claim"),
        overage_status=flat.get("overage-status"),
        updated_at=now,
    )


def _window(name: str, fields: dict[str, str]) -> PlanWindow:
    return PlanWindow(name, _fraction(fields.get("utilization")), parse_reset(fields.get("reset")), fields.get("status"))


def _window_order(item: tuple[str, dict[str, str]]) -> tuple[float, str]:
    """5h before 7d before 7d_opus: by the window's length, then by name."""
    name = item[0]
    head = name.split("_", 1)[0]
    units = {"h": 3600, "d": 86400}
    try:
        length = float(head[:-1]) * units[head[-1]]
    except (ValueError, KeyError, IndexError):
        length = float("inf")
    return length, name


def _fraction(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except ValueError:
        return None
    return f if 0.0 <= f <= 10.0 else None  # over 1 means over the limit; garbage beyond


def parse_reset(value: str | None) -> float | None:
    """A reset time given as epoch seconds or as an ISO 8601 timestamp."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
