"""The top of the dashboard: the link to the sidecar, spend now, burn rate, budgets and plan."""

from __future__ import annotations

from typing import Any

from sidecar.sync import status as sync_status
from tui import format as fmt
from tui.plan import parse_reset
from tui.records import Tally
from tui.state import Dashboard
from tui.widgets.base import TextView

BAR = 24


class ConnectionLine(TextView):
    """One line: connected or retrying, where, which daemon, and the local time."""

    SECTIONS = ("connection",)
    TICK = 1.0

    def show(self, model: Dashboard) -> None:
        """Render the link's state."""
        c = model.connection
        now = model.local(model.clock.now()).strftime("%H:%M:%S")
        if c.state == "connected":
            who = f"pid {c.pid}" if c.pid else ""
            ver = f"v{c.version}" if c.version else ""
            left = f"[$success]● connected[/] {fmt.plain(c.url or '')}  {who}  {ver}"
        elif c.state == "connecting":
            left = f"[$warning]◌ connecting[/] {fmt.plain(c.url or '')}"
        else:
            wait = f"retrying in {fmt.duration(c.retry_at - model.clock.now())}" if c.retry_at else "retrying"
            left = f"[$error]○ {wait}[/]  {fmt.plain(c.detail)}"
        if c.state == "connected" and c.detail:
            left += f"  [$warning]{fmt.plain(c.detail)}[/]"
        self.set_text(f"{left}  [$text-muted]{_sync(model.status)}  {now}[/]")


def _sync(status: dict[str, Any]) -> str:
    return fmt.plain(sync_status.headline(status.get("sync")))


class SpendHeader(TextView):
    """Today's and this month's spend, burn rate and projection, budget and plan gauges."""

    SECTIONS = ("totals", "budget", "plan", "requests")
    TICK = 1.0

    def show(self, model: Dashboard) -> None:
        """Render the header lines."""
        self.set_text("\n".join([_spend_line(model), *_budget_lines(model), _plan_line(model)]))


def _spend_line(model: Dashboard) -> str:
    burn, projected = model.burn_rate(), model.projected_today()
    parts = [
        f"[b]Today[/] [b $accent]{fmt.money(model.today.cost_usd)}[/] · {model.today.requests} req{_counts(model.today)} · {fmt.tokens(model.today.total_tokens)} tok",
        f"[b]Month[/] [b]{fmt.money(model.month.cost_usd)}[/] · {model.month.requests} req",
        f"[b]Burn[/] {fmt.money(burn)}/h" if burn is not None else "[b]Burn[/] —",
        f"≈ {fmt.money(projected)} by midnight" if projected is not None else "",
        f"[b]In flight[/] {model.in_flight()}",
    ]
    return "   ".join(p for p in parts if p)


def _counts(tally: Tally) -> str:
    """count_tokens calls beside the requests (they cost nothing); short, so the line fits 130 columns."""
    n = tally.count_tokens
    return f" [$text-muted](+{n} count{'s' if n != 1 else ''})[/]" if n else ""


def _budget_lines(model: Dashboard) -> list[str]:
    policy = model.policy
    if policy.state == "loading":
        return ["[$text-muted]Budgets: loading…[/]"]
    budgets = [b for b in policy.data.get("budgets", []) if isinstance(b, dict)]
    if policy.state == "missing" or not policy.data.get("configured", True) or not budgets:
        hint = fmt.plain("[budget] daily_usd / monthly_usd in the config")
        return [f"[$text-muted]Budgets: not configured ({hint})[/]"]
    return [budget_line(b, model.clock.now()) for b in budgets]


def budget_line(b: dict[str, Any], now: float) -> str:
    """One budget as a gauge: fill, thresholds, spent of limit, time to reset."""
    limit = float(b.get("limit_usd") or 0.0)
    spent = float(b.get("spent_usd") or 0.0)
    thresholds = [float(t) for t in b.get("thresholds", []) if isinstance(t, int | float)] or [0.8, 0.95]
    fraction = spent / limit if limit > 0 else 0.0
    resets = _epoch(b.get("resets_at"))
    reset = f"resets in {fmt.duration(resets - now)}" if resets is not None else ""
    period = str(b.get("period", "?")).capitalize()
    return f"[b]{fmt.plain(period):<6}[/]{fmt.bar(fraction, BAR, thresholds)} {fmt.percent(fraction):>4}  {fmt.money(spent)} / {fmt.money(limit)}  [$text-muted]{reset}[/]"


def _plan_line(model: Dashboard) -> str:
    plan = model.plan
    if plan is None or not plan.windows:
        return "[$text-muted]Plan: no rate-limit headers seen yet (they come with subscription traffic)[/]"
    now = model.clock.now()
    parts = []
    for w in plan.windows:
        u = w.utilization or 0.0
        reset = f" resets {fmt.duration(w.resets_at - now)}" if w.resets_at else ""
        parts.append(f"{fmt.plain(w.name)} {fmt.bar(u, 12)} {fmt.percent(w.utilization)}[$text-muted]{reset}[/]")
    status = f"  [$warning]{fmt.plain(plan.status)}[/]" if plan.status and plan.status != "allowed" else ""
    return "[b]Plan[/]  " + "   ".join(parts) + status


def _epoch(value: Any) -> float | None:
    return None if value is None else parse_reset(str(value))
