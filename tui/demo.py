"""A deterministic afternoon of Claude Code traffic, for `claude-sidecar tui --demo`, the
snapshot tests and the screenshot in docs/.

Everything is computed from `now`, so the same `now` always gives the same screen::

    python -m tui.demo docs/tui-dashboard.svg   # write the screenshot
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from textual.pilot import Pilot

from tui.app import SidecarDashboard
from tui.clock import Clock, FrozenClock
from tui.replay import ReplaySource, Step
from tui.state import DAILY_DAYS, Dashboard

ZONE = ZoneInfo("Europe/Berlin")
# 28 November 2026, 15:42:10 in Berlin: the frozen "now" of snapshots and screenshots.
NOW = datetime(2026, 11, 28, 15, 42, 10, tzinfo=ZONE).timestamp()
SESSIONS = ("9f1c2e7a-41d2-4b8e-9a51-3c7d2b1e0a44", "2b7e90c1-8d3f-4e6a-b2c4-5f1a9d8e7c62", "d41f6a3b-07c9-4f2e-8b1d-6e3a2c9f5b17")
# (model, provider/upstream, route, $/M input, $/M output)
KINDS = (
    ("claude-opus-4-8", "anthropic/claude-opus-4-8", "default", 5.0, 25.0),
    ("claude-haiku-4-5-20251001", "openai/gpt-5-mini", "background-cheap", 0.25, 2.0),
    ("claude-opus-4-8", "anthropic/claude-opus-4-8", "default", 5.0, 25.0),
    ("claude-sonnet-5", "anthropic/claude-sonnet-5", "default", 3.0, 15.0),
)


def request_event(i: int, now: float) -> dict[str, Any]:
    """The i-th priced request of the afternoon (0 is the oldest, one every ~5 minutes)."""
    model, upstream, route, p_in, p_out = KINDS[i % len(KINDS)]
    provider, _, upstream_model = upstream.partition("/")
    inp, out, read, write = 1200 + 137 * i, 180 + 41 * (i % 7), 24_000 + 1_500 * i, 900 * (i % 3)
    cache_outcome = "hit-exact" if i % 9 == 4 else "miss"
    cost = 0.0 if cache_outcome == "hit-exact" else (inp * p_in + out * p_out + read * p_in / 10 + write * p_in * 1.25) / 1e6
    status, outcome, error = (429, "upstream_error", "rate_limit_error") if i == 15 else (200, "ok", None)
    if status != 200:
        cost, out = 0.0, 0
    return {
        "id": f"01JDEMO{i:04d}ABCDEFGHJKMNPQ", "ts": now - (23 - i) * 291 - 7, "endpoint": "/v1/messages",
        "requested_model": model, "provider": provider, "upstream_model": upstream_model, "route": route,
        "target": f"{upstream}#0", "attempts": 2 if i == 10 else 1,
        "fallback": "anthropic#0" if i == 10 else None, "cache_outcome": cache_outcome, "stream": True,
        "session_id": SESSIONS[i % 3], "agent_id": None, "status": status, "outcome": outcome,
        "error_type": error, "stop_reason": "end_turn" if status == 200 else None,
        "input_tokens": inp, "output_tokens": out, "cache_read_tokens": read, "cache_write_tokens": write,
        "cost_usd": round(cost, 6), "latency_ms": 900.0 + 173 * (i % 11), "ttft_ms": 310.0 + 29 * (i % 5),
        "saved_usd": 0.0412 if cache_outcome == "hit-exact" else 0.0,
    }


def _row(key: str, requests: int, cost: float, scale: int = 1) -> dict[str, Any]:
    return {"key": key, "requests": requests, "input_tokens": 14_000 * requests * scale, "output_tokens": 2_100 * requests,
            "cache_read_tokens": 90_000 * requests, "cache_write_tokens": 3_000 * requests, "cost_usd": cost}


def _usage(now: float) -> list[Step]:
    today = datetime.fromtimestamp(now, ZONE).date()
    daily = [round(6.5 + 5.25 * ((d * 7) % 5) + (3.1 if d % 6 == 0 else 0.0), 2) for d in range(DAILY_DAYS)]
    daily[-1] = 9.10
    return [
        ("usage:model", [_row("claude-opus-4-8", 38, 8.02), _row("claude-sonnet-5", 2, 0.77), _row("gpt-5-mini", 20, 0.31)]),
        ("usage:route", [_row("default", 40, 8.79), _row("background-cheap", 20, 0.31)]),
        ("usage:session", [_row(SESSIONS[0], 22, 4.41), _row(SESSIONS[1], 19, 2.95), _row(SESSIONS[2], 11, 1.12),
                           _row("5c0e8f2d-19b7-4c3a-a6e4-7d2f1b9c8e30", 64, 11.84), _row("(none)", 8, 0.62)]),
        ("usage:daily", [{"key": (today - timedelta(days=DAILY_DAYS - 1 - d)).isoformat(), "cost_usd": c} for d, c in enumerate(daily)]),
    ]


def _routes(now: float) -> dict[str, Any]:
    def target(tid: str, provider: str, model: str | None, requests: int, failures: int, breaker: str = "closed") -> dict[str, Any]:
        return {"id": tid, "provider": provider, "model": model, "weight": 1, "breaker": breaker, "healthy": breaker == "closed",
                "consecutive_failures": failures if breaker != "closed" else 0, "last_used_at": now - 40, "requests": requests, "failures": failures}

    return {"routes": [
        {"name": "background-cheap", "enabled": True, "match": {"scenario": "background"},
         "targets": [target("openai/gpt-5-mini#0", "openai", "gpt-5-mini", 26, 1)],
         "fallbacks": [target("anthropic#0", "anthropic", None, 1, 0)], "last_upstream": "openai/gpt-5-mini"},
        {"name": "long-context", "enabled": False, "match": {"min_input_tokens": 150000},
         "targets": [target("gemini/gemini-3-pro#0", "gemini", "gemini-3-pro", 3, 2, "half_open")], "fallbacks": [], "last_upstream": None},
        {"name": "default", "enabled": True, "match": {"model": "*"},
         "targets": [target("anthropic#0", "anthropic", None, 58, 1)], "fallbacks": [], "last_upstream": "anthropic/claude-opus-4-8"},
    ]}


def _policy(now: float) -> dict[str, Any]:
    local = datetime.fromtimestamp(now, ZONE)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), ZONE)
    next_month = (local.date().replace(day=1) + timedelta(days=32)).replace(day=1)
    month_start = datetime.combine(next_month, datetime.min.time(), ZONE)
    return {"configured": True, "timezone": str(ZONE), "budgets": [
        {"period": "day", "limit_usd": 25.0, "spent_usd": 9.10, "reserved_usd": 0.42, "resets_at": midnight.isoformat(), "thresholds": [0.8, 0.95]},
        {"period": "month", "limit_usd": 400.0, "spent_usd": 212.33, "reserved_usd": 0.42, "resets_at": month_start.isoformat(), "thresholds": [0.8, 0.95]},
    ], "limits": {"requests_per_minute": 120, "input_tokens_per_minute": None, "output_tokens_per_minute": None, "max_concurrent": 8, "in_flight": 2}}


def _mcp() -> dict[str, Any]:
    def tool(server: str, name: str, calls: int, errors: int = 0, refused: int = 0, size: int = 2_400, seconds: float = 0.08) -> dict[str, Any]:
        return {"server": server, "tool": name, "calls": calls, "errors": errors, "refused": refused, "bytes": size * calls, "seconds": round(seconds * calls, 3)}

    return {
        "servers": [
            {"name": "fs", "transport": "stdio", "target": "npx @modelcontextprotocol/server-filesystem", "state": "up", "error": None,
             "restarts": 0, "tools": 14, "server": "secure-filesystem-server", "code_mode": False},
            {"name": "crm", "transport": "http", "target": "https://mcp.example.com/mcp", "state": "up", "error": None,
             "restarts": 1, "tools": 96, "server": "crm", "code_mode": True},
            {"name": "tickets", "transport": "stdio", "target": "python -m tickets_mcp", "state": "down",
             "error": "process exited with code 1", "restarts": 3, "tools": 0, "server": None, "code_mode": True},
        ],
        "tools": [
            tool("fs", "read_text_file", 41, size=6_100, seconds=0.012), tool("fs", "list_directory", 17, size=900, seconds=0.006),
            tool("fs", "write_file", 3, refused=3, size=0, seconds=0.0), tool("crm", "search_customer", 12, errors=1, seconds=0.41),
            tool("crm", "get_invoice", 9, seconds=0.22), tool("tickets", "create_ticket", 2, errors=2, size=120, seconds=10.0),
        ],
        "code_mode": True,
        "code_mode_tokens": {"tools_hidden": 96, "hidden_tokens": 41_230, "meta_tokens": 1_180},
    }


def _telemetry() -> dict[str, Any]:
    def row(key: str | None, requests: int, cost: float, matched: int | None = None) -> dict[str, Any]:
        return {"key": key, "requests": requests, "matched_requests": requests if matched is None else matched, "cost_usd": cost,
                "input_tokens": 2_900 * requests, "output_tokens": 410 * requests}

    def session(sid: str, cost: float, added: int, removed: int, commits: int, prs: int) -> dict[str, Any]:
        return {"session_id": sid, "requests": 20, "cost_usd": cost, "api_requests": 20, "matched_requests": 19, "client_cost_usd": cost * 1.02,
                "tool_decisions": 31, "tool_results": 30, "lines_added": added, "lines_removed": removed, "commits": commits,
                "pull_requests": prs, "events": 120}

    return {
        "by": {
            "query_source": [row("main", 61, 9.84), row("subagent", 24, 2.31, 23), row("compact", 3, 0.41)],
            "skill_name": [row("pdf", 6, 0.92), row("release-notes", 4, 0.37), row(None, 78, 11.27)],
            "plugin_name": [row(None, 88, 12.56)],
            "mcp_server_name": [row("sidecar", 14, 1.73), row(None, 74, 10.83)],
        },
        "sessions": [session(SESSIONS[0], 4.41, 612, 188, 4, 1), session(SESSIONS[1], 2.95, 240, 96, 2, 0),
                     session(SESSIONS[2], 1.12, 35, 12, 0, 0)],
    }


def scenario(now: float, features: bool = True) -> list[Step]:
    """Every step of the demo as of `now`; without `features`, routes/cache/policy answer 404."""
    steps: list[Step] = [
        ("event:hello", {"version": "0.1.0", "pid": 48213}),
        ("status", {"version": "0.1.0", "pid": 48213, "address": "http://127.0.0.1:8787", "uptime_s": 20_113.4, "in_flight": 2,
                    "config_file": "~/.config/claude-sidecar/config.toml",
                    "providers": [{"name": "anthropic", "type": "anthropic"}, {"name": "openai", "type": "openai"}],
                    "usage": {"timezone": str(ZONE), "today": _row("2026-11-28", 60, 9.10) | {"key": datetime.fromtimestamp(now, ZONE).date().isoformat()},
                              "month": _row("2026-11", 1311, 212.33) | {"key": datetime.fromtimestamp(now, ZONE).strftime("%Y-%m")}}}),
        *_usage(now),
        ("routes", _routes(now) if features else None),
        ("cache", {"mode": "semantic", "entries": 412, "bytes": 1_873_202, "lookups": 1311, "hits_exact": 131, "hits_semantic": 37,
                   "misses": 1143, "hit_rate": 0.128, "tokens_saved": 2_480_113, "usd_saved": 14.27, "shadow_would_hit": 0} if features else None),
        ("policy", _policy(now) if features else None),
        ("mcp", _mcp() if features else None),
        ("telemetry", _telemetry() if features else None),
    ]
    for i in range(24):
        steps.append(("event:request_started", {"id": f"01JDEMO{i:04d}ABCDEFGHJKMNPQ", "ts": now - (23 - i) * 291 - 7,
                                                "model": KINDS[i % len(KINDS)][0], "session_id": SESSIONS[i % 3], "stream": True}))
        steps.append(("event:request", request_event(i, now)))
    for j in range(2):
        steps.append(("event:request_started", {"id": f"01JDEMOLIVE{j}BCDEFGHJKMNPQ", "ts": now - 3 + j, "model": "claude-opus-4-8",
                                                "session_id": SESSIONS[j], "stream": True}))
    if features:
        steps.append(("event:ratelimit", {"unified": {
            "anthropic-ratelimit-unified-status": "allowed", "anthropic-ratelimit-unified-representative-claim": "five_hour",
            "anthropic-ratelimit-unified-5h-utilization": "0.42", "anthropic-ratelimit-unified-5h-reset": str(int(now + 7_800)),
            "anthropic-ratelimit-unified-7d-utilization": "0.18", "anthropic-ratelimit-unified-7d-reset": str(int(now + 302_400))}}))
    return steps


def demo_app(clock: Clock | None = None, features: bool = True) -> SidecarDashboard:
    """The dashboard showing the demo afternoon, frozen at NOW unless another clock is given."""
    clock = clock or FrozenClock(NOW)
    model = Dashboard(clock, zone=ZONE)
    model.live_since = clock.now() - 2.5 * 3600  # "watching since lunch"
    return SidecarDashboard(ReplaySource(scenario(clock.now(), features), url="http://127.0.0.1:8787"), model=model)


def main(argv: list[str] | None = None) -> None:
    """Write an SVG screenshot of the demo dashboard."""
    parser = argparse.ArgumentParser(prog="python -m tui.demo", description=main.__doc__)
    parser.add_argument("path", help="where to write the SVG")
    parser.add_argument("--size", default="140x42", help="terminal size WxH (default 140x42)")
    parser.add_argument("--tab", default="requests", help="which tab to show")
    args = parser.parse_args(argv)
    width, height = (int(n) for n in args.size.lower().split("x"))
    svg = asyncio.run(screenshot(args.tab, (width, height)))
    with open(args.path, "w", encoding="utf-8") as f:
        f.write(svg)


async def screenshot(tab: str, size: tuple[int, int]) -> str:
    """An SVG of the demo dashboard on `tab` at `size` (columns, rows)."""
    app = demo_app()
    async with app.run_test(size=size) as pilot:
        await show_tab(pilot, tab)
        return app.export_screenshot(title="claude-sidecar tui")


async def show_tab(pilot: Pilot[Any], tab: str, *keys: str) -> None:
    """Wait for the replay to be applied, switch to `tab`, press `keys`, and let it settle."""
    app = pilot.app
    assert isinstance(app, SidecarDashboard)
    while app.model.connection.state != "connected" or app.model.in_flight() < 2:
        await pilot.pause(0.01)  # the last steps of the replay are two requests starting
    app.action_show_tab(tab)
    await pilot.pause()
    if keys:
        await pilot.press(*keys)
    app.refresh_views()
    await settled(pilot)


async def settled(pilot: Pilot[Any]) -> None:
    """Until the footer has shown the same keys for five refreshes in a row.

    Focus and binding changes reach the footer a refresh or two later, when it rebuilds
    itself; a screenshot taken in between would show it empty.
    """
    main_screen = pilot.app.screen_stack[0]
    last: list[int] = []
    stable = 0
    while stable < 5:
        await pilot.pause(0.02)
        keys = [id(k) for k in main_screen.query("FooterKey")]
        stable = stable + 1 if keys and keys == last else 0
        last = keys


if __name__ == "__main__":
    main()
