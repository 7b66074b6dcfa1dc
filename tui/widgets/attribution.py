"""Claude Code's own telemetry joined to spend: dollars by source (main, subagent), skill,
plugin and MCP server, and lines of code, commits and pull requests per dollar."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from tui import format as fmt
from tui.state import TELEMETRY_ATTRIBUTES, TELEMETRY_DAYS, Dashboard
from tui.widgets.base import ModelView


class AttributionView(ModelView, Vertical):
    """The productivity line over one table grouped by attribute."""

    SECTIONS = ("telemetry",)

    def compose(self) -> ComposeResult:
        """A summary over the table."""
        yield Static(id="attribution-summary", classes="notice")
        yield DataTable[Text](id="attribution-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        """Add the columns."""
        table: DataTable[Text] = self.query_one("#attribution-table", DataTable)
        table.border_title = f"Claude Code's requests, last {TELEMETRY_DAYS} days"
        table.add_columns("Attribute / value", "Requests", "Matched", "Input", "Output", "Cost", "Share")

    def show(self, model: Dashboard) -> None:
        """Render the summary and the grouped rows."""
        feature = model.telemetry
        by: dict[str, list[dict[str, Any]]] = feature.data.get("by", {})
        sessions: list[dict[str, Any]] = feature.data.get("sessions", [])
        self.query_one("#attribution-summary", Static).update(summary(feature.state, sessions))
        table: DataTable[Text] = self.query_one("#attribution-table", DataTable)
        table.display = feature.state == "ready" and bool(sessions or any(by.values()))
        table.clear()
        for attr, label in TELEMETRY_ATTRIBUTES:
            rows = by.get(attr, [])
            named = [r for r in rows if r.get("key") not in (None, "")]
            total = sum(_num(r.get("cost_usd")) for r in rows)
            table.add_row(Text(f"{label} ({attr})", style="bold"), *(Text("") for _ in range(6)), key=f"attr:{attr}")
            if not named:
                table.add_row(Text("  not reported by this Claude Code", style="italic"), *(Text("") for _ in range(6)), key=f"none:{attr}")
                continue
            for r in rows:
                key = "(none)" if r.get("key") in (None, "") else str(r.get("key"))
                cost = _num(r.get("cost_usd"))
                table.add_row(
                    Text(f"  {key}"),
                    Text(str(int(_num(r.get("requests")))), justify="right"),
                    Text(str(int(_num(r.get("matched_requests")))), justify="right"),
                    Text(fmt.tokens(int(_num(r.get("input_tokens")))), justify="right"),
                    Text(fmt.tokens(int(_num(r.get("output_tokens")))), justify="right"),
                    Text(fmt.money(cost), justify="right"),
                    Text(fmt.percent(cost / total if total > 0 else 0.0), justify="right"),
                    key=f"{attr}={key}",
                )


def summary(state: str, sessions: list[dict[str, Any]]) -> str:
    """Lines of code, commits and pull requests per dollar over the sessions that sent telemetry."""
    if state == "loading":
        return "[$text-muted]Loading Claude Code's telemetry…[/]"
    if state == "missing":
        return "[$warning]Claude Code telemetry: not available.[/] This sidecar has no telemetry API (an older version)."
    if not sessions:
        return ("[b]Claude Code telemetry[/] none recorded in the last "
                f"{TELEMETRY_DAYS} days  [$text-muted](`claude-sidecar run -- claude` sends it)[/]")  # fmt: skip
    cost = sum(_num(s.get("cost_usd")) for s in sessions)
    added = sum(_num(s.get("lines_added")) for s in sessions)
    removed = sum(_num(s.get("lines_removed")) for s in sessions)
    commits = sum(_num(s.get("commits")) for s in sessions)
    prs = sum(_num(s.get("pull_requests")) for s in sessions)
    head = (f"[b]Claude Code telemetry[/] {_n(len(sessions), 'session')} · {fmt.money(cost)} in the ledger · "
            f"+{added:,.0f} / -{removed:,.0f} lines · {_n(commits, 'commit')} · {_n(prs, 'pull request')}")  # fmt: skip
    if cost <= 0:
        return head + "\n[$text-muted]Per dollar: no spend recorded for these sessions.[/]"
    per = (f"[b]Per dollar[/] [b $success]{(added + removed) / cost:,.0f} lines changed[/] · "
           f"{commits / cost:,.2f} commits · {prs / cost:,.2f} pull requests   "
           f"[$text-muted]({fmt.money(cost / commits) + ' per commit' if commits else 'no commits yet'})[/]")  # fmt: skip
    return f"{head}\n{per}"


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _n(count: float, noun: str) -> str:
    return f"{count:,.0f} {noun}{'' if count == 1 else 's'}"
