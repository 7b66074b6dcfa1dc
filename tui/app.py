"""The Textual app: header, tabbed views, footer; data from a Source, rendered on a timer.

Data flow: the Source runs in a worker and feeds the Dashboard model (cheap, no widgets
touched); a timer every `refresh_interval` seconds re-renders only the views whose model
sections changed. A burst of events therefore costs one render per tick, never one per
event, and the event loop stays free for keys and the mouse.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, TabbedContent, TabPane, Tabs
from textual.worker import Worker, WorkerState

from tui.client import ControlError
from tui.clock import Clock, SystemClock
from tui.source import Source
from tui.state import Dashboard
from tui.widgets.attribution import AttributionView
from tui.widgets.base import ModelView
from tui.widgets.cache import CacheView
from tui.widgets.detail import RequestDetail
from tui.widgets.header import ConnectionLine, SpendHeader
from tui.widgets.limits import LimitsView
from tui.widgets.livetable import LiveTable
from tui.widgets.mcp import McpView
from tui.widgets.requests import RequestTable
from tui.widgets.routes import RoutesView
from tui.widgets.sessions import SessionTable
from tui.widgets.spend import SpendView

TABS = (
    ("requests", "Requests"),
    ("spend", "Spend"),
    ("routes", "Routes"),
    ("cache", "Cache"),
    ("sessions", "Sessions"),
    ("budget", "Budget & plan"),
    ("claude-code", "Claude Code"),
    ("mcp", "MCP"),
)
RESTART_FEED_AFTER = 1.0  # seconds before a crashed feed starts again


class SidecarDashboard(App[None]):
    """`claude-sidecar tui`: live spend, requests, routes, cache, budgets, Claude Code's telemetry and MCP."""

    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses live elsewhere
    AUTO_FOCUS = "#request-table"
    TITLE = "claude-sidecar"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        *(Binding(str(i), f"show_tab('{tab}')", label, show=False) for i, (tab, label) in enumerate(TABS, 1)),
        Binding("p", "pause", "Pause"),
        Binding("space", "toggle_route", "Toggle route"),
        Binding("r", "reconnect", "Reconnect"),
    ]

    def __init__(self, source: Source, *, clock: Clock | None = None, model: Dashboard | None = None, refresh_interval: float = 0.15) -> None:
        super().__init__()
        self.source = source
        self.model = model or Dashboard(clock or SystemClock())
        self.refresh_interval = refresh_interval
        self._views: list[ModelView] = []
        self._seen: dict[int, tuple[float, ...]] = {}

    def compose(self) -> ComposeResult:
        """Connection line, spend header, the tabs, the footer."""
        yield ConnectionLine(id="connection")
        yield SpendHeader(id="header")
        with TabbedContent(initial="requests"):
            with TabPane("Requests", id="requests"):
                yield RequestTable(id="request-table")
            with TabPane("Spend", id="spend"):
                yield SpendView(id="spend-view")
            with TabPane("Routes", id="routes"):
                yield RoutesView(id="routes-view")
            with TabPane("Cache", id="cache"), VerticalScroll():
                yield CacheView(id="cache-view")
            with TabPane("Sessions", id="sessions"):
                yield SessionTable(id="session-table")
            with TabPane("Budget & plan", id="budget"), VerticalScroll():
                yield LimitsView(id="limits-view")
            with TabPane("Claude Code", id="claude-code"):
                yield AttributionView(id="attribution-view")
            with TabPane("MCP", id="mcp"):
                yield McpView(id="mcp-view")
        yield Footer()

    def on_mount(self) -> None:
        """Collect the views, render once, start the feed and the render timer."""
        self._views = [w for w in self.screen.query("*") if isinstance(w, ModelView)]
        self.refresh_views()
        self.set_interval(self.refresh_interval, self.refresh_views)
        self.feed()

    @work(exclusive=True, group="source", exit_on_error=False)
    async def feed(self) -> None:
        """Run the source (all network IO happens here)."""
        await self.source.run(self.model)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A feed that crashed is a bug: say so, and start it again."""
        if event.worker.group == "source" and event.state == WorkerState.ERROR:
            self.notify(f"the data feed failed: {event.worker.error!r}; restarting it", severity="error")
            self.set_timer(RESTART_FEED_AFTER, self.feed)

    # ---------------------------------------------------------------- rendering

    def refresh_views(self) -> None:
        """Re-render the visible views whose sections changed; show queued alerts."""
        for view in self._views:
            assert isinstance(view, Widget)
            if not _displayed(view):
                continue
            key = view.render_key(self.model)
            if self._seen.get(id(view)) != key:
                self._seen[id(view)] = key
                view.show(self.model)
        while self.model.alerts:
            alert = self.model.alerts.popleft()
            self.notify(alert.message, severity=alert.severity, timeout=6)

    @on(TabbedContent.TabActivated)
    def _tab_changed(self, event: TabbedContent.TabActivated) -> None:
        """Render the tab's views at once; after a click on the tab bar, focus its table."""
        self.refresh_views()
        # Focusing a widget in a pane activates that pane, so only move focus when it sits
        # on the tab bar itself: moving it from another pane could switch tabs back.
        if isinstance(self.focused, Tabs) and event.pane.id == event.tabbed_content.active:
            self._focus_table(event.pane)

    def _focus_table(self, pane: Widget) -> None:
        tables = pane.query("DataTable, LiveTable, VerticalScroll")
        if tables:
            tables.first().focus()

    # ---------------------------------------------------------------- actions

    def action_show_tab(self, tab: str) -> None:
        """Switch to a tab and give the keyboard to its table."""
        tabbed = self.query_one(TabbedContent)
        tabbed.active = tab
        self._focus_table(tabbed.get_pane(tab))

    def action_pause(self) -> None:
        """Freeze the live table (events keep being counted) or let it run again."""
        table = self.query_one(RequestTable)
        table.paused = not table.paused
        label = "Requests (paused)" if table.paused else "Requests"
        self.query_one(TabbedContent).get_tab("requests").label = label
        self.notify("live table paused (p resumes)" if table.paused else "live table resumed", timeout=3)

    def action_reconnect(self) -> None:
        """Retry the connection now instead of waiting."""
        self.source.reconnect_now()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The route toggle only exists on the routes tab."""
        if action == "toggle_route":
            return self.query_one(TabbedContent).active == "routes"
        return True

    def action_toggle_route(self) -> None:
        """Enable or disable the route under the cursor."""
        name = self.query_one(RoutesView).selected_route()
        if name is None:
            self.notify("no route selected", severity="warning")
            return
        route = next((r for r in RoutesView.routes(self.model) if r.get("name") == name), {})
        self.set_route(name, route.get("enabled", True) is False)

    @work(group="actions", exit_on_error=False)
    async def set_route(self, name: str, enabled: bool) -> None:
        """Ask the sidecar to enable or disable a route; show the result."""
        try:
            route = await self.source.set_route(name, enabled)
        except ControlError as e:
            self.notify(f"could not {'enable' if enabled else 'disable'} {name}: {e}", severity="error")
            return
        self.model.apply_route(route)
        self.notify(f"route {name} {'enabled' if route.get('enabled', enabled) else 'disabled'}", timeout=3)

    @work(group="actions", exit_on_error=False)
    async def clear_cache(self) -> None:
        """Empty the sidecar's response cache."""
        try:
            cleared = await self.source.clear_cache()
        except ControlError as e:
            self.notify(f"could not clear the cache: {e}", severity="error")
            return
        self.notify(f"cache cleared ({cleared} entries)", timeout=3)

    @on(LiveTable.Selected, "#request-table")
    def _open_detail(self, event: LiveTable.Selected) -> None:
        row = self.model.rows.get(event.key)
        if row is not None:
            self.push_screen(RequestDetail(row, self.model))

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """The palette: Textual's commands, tabs, route toggles, pause, reconnect, cache."""
        yield from super().get_system_commands(screen)
        for tab, label in TABS:
            yield SystemCommand(f"Show {label}", f"Switch to the {label} tab", lambda t=tab: self.action_show_tab(t))
        for route in RoutesView.routes(self.model):
            name, enabled = str(route.get("name")), route.get("enabled", True) is not False
            verb = "Disable" if enabled else "Enable"
            yield SystemCommand(f"{verb} route {name}", f"{verb} the route {name} on the sidecar", lambda n=name, e=not enabled: self.set_route(n, e))
        yield SystemCommand("Pause or resume the live table", "Freeze the request table", self.action_pause)
        yield SystemCommand("Reconnect now", "Retry the sidecar connection without waiting", self.action_reconnect)
        if self.model.cache.state == "ready" and self.model.cache.data.get("mode", "off") != "off":
            yield SystemCommand("Clear the cache", "Remove every cached response", self.clear_cache)


def _displayed(widget: Widget) -> bool:
    """False when the widget or a container of it is hidden (an inactive tab)."""
    node: object = widget
    while isinstance(node, Widget):
        if not node.display:
            return False
        node = node.parent
    return True
