"""Routes with their targets' health and breaker state; a key toggles the selected route."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from tui import format as fmt
from tui.state import Dashboard
from tui.widgets.base import ModelView, tint

_BREAKER_COLOURS = {"closed": "success", "half_open": "warning", "open": "error"}


class RoutesView(ModelView, Vertical):
    """The route table, or why there is none."""

    SECTIONS = ("routes",)
    TICK = 5.0  # "last used" ages

    def compose(self) -> ComposeResult:
        """A notice line over the table."""
        yield Static(id="routes-notice", classes="notice")
        yield DataTable[Text](id="routes-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        """Add the columns."""
        table = self.query_one("#routes-table", DataTable)
        table.add_columns("Route / target", "State", "Match", "Weight", "Breaker", "Health", "Req", "Fail", "Last used")

    def show(self, model: Dashboard) -> None:
        """Render the routes (keeping the cursor on the same row)."""
        notice = self.query_one("#routes-notice", Static)
        table: DataTable[Text] = self.query_one("#routes-table", DataTable)
        routes = self.routes(model)
        notice.update(_notice(model, routes))
        notice.display = bool(notice.content)
        table.display = bool(routes)
        cursor_key = self.selected_key()
        table.clear()
        now = model.clock.now()
        for route in routes:
            name = str(route.get("name", "?"))
            table.add_row(*self._route_cells(route), key=f"route:{name}")
            for kind in ("targets", "fallbacks"):
                for target in route.get(kind, []):
                    if isinstance(target, dict):
                        table.add_row(*self._target_cells(target, kind, now), key=f"target:{name}:{kind}:{target.get('id')}")
        if cursor_key is not None and cursor_key in table.rows:
            table.move_cursor(row=table.get_row_index(cursor_key), animate=False, scroll=False)

    @staticmethod
    def routes(model: Dashboard) -> list[dict[str, Any]]:
        """The routes the sidecar reported (empty when none, or when the API is missing)."""
        routes = model.routes.data.get("routes", [])
        return [r for r in routes if isinstance(r, dict)] if isinstance(routes, list) else []

    def selected_key(self) -> str | None:
        """The key of the row under the cursor, if any."""
        table: DataTable[Text] = self.query_one("#routes-table", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return str(key) if key is not None else None

    def selected_route(self) -> str | None:
        """The name of the route the cursor is on (a target row counts as its route)."""
        key = self.selected_key()
        if key is None:
            return None
        return key.split(":", 2)[1]

    def _route_cells(self, route: dict[str, Any]) -> list[Text]:
        enabled = route.get("enabled", True) is not False
        state = tint(self, "enabled" if enabled else "disabled", "success" if enabled else "warning")
        last = route.get("last_upstream")
        return [
            Text(str(route.get("name", "?")), style="bold"),
            state,
            Text(_match(route.get("match"))),
            Text(""),
            Text(""),
            Text(""),
            Text(""),
            Text(""),
            Text(f"→ {last}" if last else "", style="italic"),
        ]

    def _target_cells(self, t: dict[str, Any], kind: str, now: float) -> list[Text]:
        label = f"{t.get('provider', '?')}/{t['model']}" if t.get("model") else str(t.get("provider", "?"))
        breaker = str(t.get("breaker", "closed"))
        healthy = t.get("healthy", True) is not False
        last = t.get("last_used_at")
        return [
            Text(("  └ fallback " if kind == "fallbacks" else "  └ ") + label),
            Text(""),
            Text(""),
            Text(str(t.get("weight", 1)), justify="right"),
            tint(self, breaker.replace("_", "-"), _BREAKER_COLOURS.get(breaker)),
            tint(self, "healthy" if healthy else "unhealthy", "success" if healthy else "error"),
            Text(str(t.get("requests", 0)), justify="right"),
            Text(str(t.get("failures", 0)), justify="right"),
            Text(f"{fmt.duration(now - float(last))} ago" if isinstance(last, int | float) else "—"),
        ]


def _match(match: Any) -> str:
    if not isinstance(match, dict) or not match:
        return "*"
    return ", ".join(f"{k}={v}" for k, v in match.items())


def _notice(model: Dashboard, routes: list[dict[str, Any]]) -> str:
    state = model.routes.state
    if state == "loading":
        return "[$text-muted]Loading routes…[/]"
    if state == "missing":
        return "[$warning]Routes: not configured.[/] This sidecar has no routes API; every request goes to its provider."
    if not routes:
        hint = fmt.plain("[[routes]]")
        return f"[$text-muted]No routes configured: every request goes to the default provider (add {hint} to the config).[/]"
    return "[$text-muted]space: enable/disable the selected route · routes apply to the next request[/]"
