"""Plan utilization read from the unified rate-limit headers."""

from __future__ import annotations

from datetime import UTC, datetime

from tui.plan import PlanWindow, parse_unified


def test_prefixed_headers_give_windows_in_length_order() -> None:
    plan = parse_unified(
        {
            "anthropic-ratelimit-unified-status": "allowed_warning",
            "anthropic-ratelimit-unified-representative-claim": "seven_day",
            "anthropic-ratelimit-unified-7d_opus-utilization": "0.91",
            "anthropic-ratelimit-unified-7d-utilization": "0.5",
            "anthropic-ratelimit-unified-7d-reset": "1764900000",
            "anthropic-ratelimit-unified-5h-utilization": "0.25",
            "anthropic-ratelimit-unified-5h-status": "allowed",
            "anthropic-ratelimit-unified-overage-status": "rejected",
        },
        now=100.0,
    )
    assert [w.name for w in plan.windows] == ["5h", "7d", "7d_opus"]
    assert plan.windows[0] == PlanWindow("5h", 0.25, None, "allowed")
    assert plan.windows[1].resets_at == 1764900000.0
    assert plan.status == "allowed_warning" and plan.representative_claim == "seven_day"
    assert plan.overage_status == "rejected" and plan.updated_at == 100.0


def test_bare_names_iso_resets_and_garbage() -> None:
    plan = parse_unified({"5H-Utilization": "0.4", "5h-reset": "2026-11-28T18:00:00Z", "7d-utilization": "lots", "x": "1"}, now=0)
    assert plan.windows[0] == PlanWindow("5h", 0.4, datetime(2026, 11, 28, 18, tzinfo=UTC).timestamp(), None)
    assert plan.windows[1] == PlanWindow("7d", None, None, None)  # unreadable utilization is not guessed
    assert len(plan.windows) == 2
