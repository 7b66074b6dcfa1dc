"""Claude Code sessions with their totals over the last week, biggest first (as ccusage sorts)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from tui import format as fmt
from tui.state import SESSION_DAYS, Dashboard
from tui.widgets.base import ModelView


class SessionTable(ModelView, DataTable[Text]):
    """One row per session id."""

    SECTIONS = ("sessions",)
    TICK = 10.0  # "last seen" ages

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        """Add the columns."""
        self.border_title = f"Sessions, last {SESSION_DAYS} days"
        self.add_columns("Session", "Requests", "Input", "Output", "Cache read", "Cache write", "Cost", "Last seen")

    def show(self, model: Dashboard) -> None:
        """Replace the rows."""
        self.clear()
        now = model.clock.now()
        for key, t in sorted(model.sessions.items(), key=lambda kv: (-kv[1].cost_usd, kv[0])):
            seen = model.session_seen.get(key)
            self.add_row(
                Text(key),
                Text(str(t.requests), justify="right"),
                Text(fmt.tokens(t.input_tokens), justify="right"),
                Text(fmt.tokens(t.output_tokens), justify="right"),
                Text(fmt.tokens(t.cache_read_tokens), justify="right"),
                Text(fmt.tokens(t.cache_write_tokens), justify="right"),
                Text(fmt.money(t.cost_usd), justify="right"),
                Text(f"{fmt.duration(now - seen)} ago" if seen else "before this view"),
                key=key,
            )
