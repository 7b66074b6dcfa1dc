"""Budgets, rate limits, plan utilization, sync, and the sidecar itself, in detail."""

from __future__ import annotations

from typing import Any

from sidecar.sync import status as sync_status
from tui import format as fmt
from tui.state import Dashboard
from tui.widgets.base import TextView
from tui.widgets.header import budget_line

_LIMITS = (
    ("requests_per_minute", "requests/min"),
    ("input_tokens_per_minute", "input tokens/min"),
    ("output_tokens_per_minute", "output tokens/min"),
    ("max_concurrent", "concurrent"),
)


class LimitsView(TextView):
    """Everything that bounds spend and traffic, and where the sidecar stands."""

    SECTIONS = ("budget", "plan", "connection", "totals")
    TICK = 1.0

    def show(self, model: Dashboard) -> None:
        """Render the sections."""
        blocks = [_budgets(model), _limits(model), _plan(model), _sidecar(model)]
        self.set_text("\n\n".join("\n".join(b) for b in blocks))


def _budgets(model: Dashboard) -> list[str]:
    p = model.policy
    head = "[b $primary]Budgets[/]"
    if p.state == "loading":
        return [head, "[$text-muted]loading…[/]"]
    if p.state == "missing" or not p.data.get("configured", True):
        return [head, "[$text-muted]not configured[/]"]
    now = model.clock.now()
    lines = [head]
    zone = p.data.get("timezone")
    for b in p.data.get("budgets", []):
        if isinstance(b, dict):
            reserved = float(b.get("reserved_usd") or 0.0)
            lines.append(budget_line(b, now) + (f"  [$text-muted]+{fmt.money(reserved)} reserved[/]" if reserved else ""))
    if zone:
        lines.append(f"[$text-muted]days and months are cut in {fmt.plain(str(zone))}[/]")
    return lines


def _limits(model: Dashboard) -> list[str]:
    head = "[b $primary]Limits[/]"
    limits = model.policy.data.get("limits")
    if model.policy.state != "ready" or not isinstance(limits, dict):
        return [head, "[$text-muted]not configured[/]"]
    parts = [f"{label} {limits[key]}" for key, label in _LIMITS if limits.get(key) is not None]
    if isinstance(limits.get("in_flight"), int):
        parts.append(f"in flight {limits['in_flight']}")
    return [head, fmt.plain(" · ".join(parts)) if parts else "[$text-muted]none set[/]"]


def _plan(model: Dashboard) -> list[str]:
    head = "[b $primary]Plan utilization[/] [$text-muted](anthropic-ratelimit-unified-* headers; unofficial)[/]"
    plan = model.plan
    if plan is None:
        return [head, "[$text-muted]none seen yet: they come with Claude subscription traffic[/]"]
    now = model.clock.now()
    lines = [head]
    for w in plan.windows:
        reset = f"resets in {fmt.duration(w.resets_at - now)}" if w.resets_at else ""
        status = f" [$warning]{fmt.plain(w.status)}[/]" if w.status and w.status != "allowed" else ""
        lines.append(f"{fmt.plain(w.name):<8}{fmt.bar(w.utilization or 0.0, 30)} {fmt.percent(w.utilization):>4}  [$text-muted]{reset}[/]{status}")
    extra = [f"status {plan.status}" if plan.status else "", f"binding window {plan.representative_claim}" if plan.representative_claim else "", f"overage {plan.overage_status}" if plan.overage_status else ""]
    if any(extra):
        lines.append(fmt.plain(" · ".join(e for e in extra if e)))
    lines.append(f"[$text-muted]updated {fmt.duration(now - plan.updated_at)} ago[/]")
    return lines


def _sidecar(model: Dashboard) -> list[str]:
    s: dict[str, Any] = model.status
    lines = ["[b $primary]Sidecar[/]"]
    if not s:
        return [*lines, "[$text-muted]no status yet[/]"]
    providers = ", ".join(f"{p.get('name')} ({p.get('type')})" for p in s.get("providers", []) if isinstance(p, dict))
    lines.append(fmt.plain(f"{s.get('address', '?')} · pid {s.get('pid', '?')} · v{s.get('version', '?')} · up {fmt.duration(float(s.get('uptime_s') or 0))}"))
    lines.append(fmt.plain(f"providers: {providers or 'none'} · config: {s.get('config_file') or 'defaults'}"))
    sync = s.get("sync")
    detail = sync_status.lines(sync)
    if isinstance(sync, dict) and sync.get("enrolled"):
        lines += [fmt.plain(line) for line in detail]
    else:
        lines += [f"[$text-muted]{fmt.plain(line)}[/]" for line in detail]
    if model.dropped_events or model.bad_events:
        lines.append(f"[$warning]events dropped {model.dropped_events} · malformed {model.bad_events}[/]")
    return lines
