"""Where the money goes: today by hour, the last two weeks by day, and per model and route."""

from __future__ import annotations

from datetime import timedelta

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Static

from tui import format as fmt
from tui.records import Tally
from tui.state import DAILY_DAYS, Dashboard
from tui.widgets.base import ModelView

CHART_HEIGHT = 5


class SpendView(ModelView, Vertical):
    """Spend charts and the per-model and per-route breakdowns for today."""

    SECTIONS = ("spend", "totals")

    def compose(self) -> ComposeResult:
        """Two charts side by side over two breakdown tables."""
        with Horizontal(classes="charts"):
            yield Static(id="hourly", classes="chart")
            yield Static(id="daily", classes="chart")
        with Horizontal(classes="breakdowns"):
            yield BreakdownTable("Model", id="by-model")
            yield BreakdownTable("Route", id="by-route")

    def show(self, model: Dashboard) -> None:
        """Render both charts and both tables."""
        self.query_one("#hourly", Static).update(hourly_chart(model))
        self.query_one("#daily", Static).update(daily_chart(model))
        self.query_one("#by-model", BreakdownTable).fill(model.by_model, model.today.cost_usd)
        self.query_one("#by-route", BreakdownTable).fill(model.by_route, model.today.cost_usd)


def hourly_chart(model: Dashboard) -> str:
    """Today's spend per local hour, as seen live since the dashboard connected."""
    values = [model.hourly.get(h, 0.0) for h in range(24)]
    rows = [" ".join(c * 2 for c in line) for line in fmt.sparkbars(values, CHART_HEIGHT)]
    labels = "".join(f"{h:02d}".ljust(9) for h in range(0, 24, 3))
    since = model.local(model.live_since).strftime("%H:%M") if model.live_since else "—"
    seen = sum(values)
    title = f"[b]Today by hour[/]  [$text-muted]{fmt.money(seen)} seen live since {since} · ledger today {fmt.money(model.today.cost_usd)}[/]"
    return "\n".join([title, *(f"[$accent]{r}[/]" for r in rows), f"[$text-muted]{labels}[/]"])


def daily_chart(model: Dashboard) -> str:
    """Spend per local day over the last two weeks, from the ledger."""
    today = model.today_date()
    days = [today - timedelta(days=back) for back in range(DAILY_DAYS - 1, -1, -1)]
    values = [model.daily.get(d.isoformat(), 0.0) for d in days]
    rows = [" ".join(c * 2 for c in line) for line in fmt.sparkbars(values, CHART_HEIGHT)]
    labels = "".join(d.strftime("%d").ljust(6) for d in days[::2])
    title = f"[b]Last {DAILY_DAYS} days[/]  [$text-muted]max {fmt.money(max(values, default=0.0))}/day · total {fmt.money(sum(values))}[/]"
    return "\n".join([title, *(f"[$primary]{r}[/]" for r in rows), f"[$text-muted]{labels}[/]"])


class BreakdownTable(DataTable[Text]):
    """Requests, tokens and dollars per key, biggest spender first."""

    def __init__(self, label: str, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.label = label

    def on_mount(self) -> None:
        """Add the columns."""
        self.add_columns(self.label, "Req", "Tokens", "Cost", "Share")

    def fill(self, tallies: dict[str, Tally], total: float) -> None:
        """Replace the rows."""
        self.clear()
        for key, t in sorted(tallies.items(), key=lambda kv: (-kv[1].cost_usd, kv[0])):
            share = t.cost_usd / total if total > 0 else 0.0
            self.add_row(
                Text(key),
                Text(str(t.requests), justify="right"),
                Text(fmt.tokens(t.total_tokens), justify="right"),
                Text(fmt.money(t.cost_usd), justify="right"),
                Text(fmt.percent(share), justify="right"),
                key=key,
            )
