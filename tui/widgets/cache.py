"""The response cache: hit rate, what it saved, and how big it is."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tui import format as fmt
from tui.state import Dashboard
from tui.widgets.base import TextView


class CacheView(TextView):
    """Cache statistics from `/cache`, plus the outcomes of the requests in the live table."""

    SECTIONS = ("cache", "requests")

    def show(self, model: Dashboard) -> None:
        """Render the statistics, or why there are none."""
        self.set_text("\n".join([*_stats(model.cache.state, model.cache.data), "", _live(model)]))


def _stats(state: str, c: dict[str, Any]) -> list[str]:
    if state == "loading":
        return ["[$text-muted]Loading cache statistics…[/]"]
    if state == "missing":
        return ["[$warning]Cache: not configured.[/] This sidecar has no cache API."]
    mode = str(c.get("mode", "off"))
    if mode == "off":
        hint = fmt.plain('[cache] mode = "exact" or "semantic"')
        return [f"[b]Cache[/] off  [$text-muted](turn it on with {hint} in the config)[/]"]
    rate = float(c.get("hit_rate") or 0.0)
    lines = [
        f"[b]Cache[/] {fmt.plain(mode)}   {c.get('entries', 0)} entries · {_size(c.get('bytes'))}",
        f"[b]Hit rate[/] {fmt.bar(rate, 30, ())} {fmt.percent(rate)}   ({c.get('lookups', 0)} lookups)",
        f"  exact hits {c.get('hits_exact', 0)} · semantic hits {c.get('hits_semantic', 0)} · misses {c.get('misses', 0)}",
        f"[b]Saved[/] [b $success]{fmt.money(_num(c.get('usd_saved')))}[/] · {fmt.tokens(int(_num(c.get('tokens_saved'))))} tokens",
    ]
    if mode == "shadow" or c.get("shadow_would_hit"):
        lines.append(f"  shadow mode: {c.get('shadow_would_hit', 0)} requests would have been answered from the cache")
    return lines


def _live(model: Dashboard) -> str:
    outcomes = Counter(r.cache_outcome or "none" for r in model.rows.values() if not r.in_flight)
    if not outcomes:
        return "[$text-muted]Recent requests: none yet[/]"
    saved = sum(float(r.data.get("saved_usd") or 0.0) for r in model.rows.values())
    parts = " · ".join(f"{k} {n}" for k, n in sorted(outcomes.items()))
    return f"[b]Recent requests[/] ({sum(outcomes.values())}): {fmt.plain(parts)} · saved {fmt.money(saved)}"


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _size(value: Any) -> str:
    n = _num(value)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
