"""The MCP and Claude Code tabs on recorded data: keys, MCP server events, and what each
panel says when the sidecar has no such API or nothing to show."""

from __future__ import annotations

from textual.widgets import DataTable, Static, TabbedContent

from tests.tui.conftest import wait_until
from tui.clock import FrozenClock
from tui.demo import NOW, demo_app, show_tab
from tui.state import Dashboard
from tui.widgets.attribution import summary as attribution_summary
from tui.widgets.mcp import summary as mcp_summary

SIZE = (130, 40)


def state_of(app: object, server: str) -> str:
    table: DataTable[object] = app.query_one("#mcp-servers", DataTable)  # type: ignore[attr-defined]
    return str(table.get_row(server)[1])


async def test_keys_7_and_8_open_the_claude_code_and_mcp_tabs_with_their_tables_focused() -> None:
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await show_tab(pilot, "requests")
        tabs = app.query_one(TabbedContent)
        await pilot.press("7")
        await wait_until(pilot, lambda: tabs.active == "claude-code" and app.focused is not None and app.focused.id == "attribution-table", "the Claude Code tab")
        await pilot.press("8")
        await wait_until(pilot, lambda: tabs.active == "mcp" and app.focused is not None and app.focused.id == "mcp-servers", "the MCP tab")
        assert "Show MCP" in {c.title for c in app.get_system_commands(app.screen)}


async def test_mcp_server_events_change_the_servers_state_at_once_and_warn() -> None:
    app = demo_app()
    said: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        await show_tab(pilot, "mcp")
        notify = app.notify
        app.notify = lambda message, **kw: (said.append(message), notify(message, **kw))[1]  # type: ignore[method-assign,func-returns-value]
        assert state_of(app, "fs") == "up"
        app.model.apply_event("mcp_server_down", {"server": "fs", "error": "ping timed out", "retry_in": 0.5})
        await wait_until(pilot, lambda: state_of(app, "fs") == "down", "fs down")
        assert said == ["MCP server fs is down: ping timed out"]
        assert "1 of 3 up" in str(app.query_one("#mcp-summary", Static).render())
        app.model.apply_event("mcp_server_up", {"server": "tickets", "tools": 7})
        await wait_until(pilot, lambda: state_of(app, "tickets") == "up", "tickets up")
        table: DataTable[object] = app.query_one("#mcp-servers", DataTable)
        assert str(table.get_row("tickets")[3]) == "7"


def test_the_panels_say_why_they_are_empty() -> None:
    assert "not available" in mcp_summary("missing", {}, [], [])
    assert "no upstream servers" in mcp_summary("ready", {"servers": [], "tools": [], "code_mode": False}, [], [])
    assert "not available" in attribution_summary("missing", [])
    assert "none recorded" in attribution_summary("ready", [])
    # Sessions without spend in the ledger: no division by zero, and no per-dollar figure.
    free = attribution_summary("ready", [{"session_id": "S", "cost_usd": 0, "lines_added": 5, "commits": 1}])
    assert "no spend recorded" in free and "+5 / -0 lines" in free


def test_a_404_on_the_telemetry_api_makes_the_feature_missing_and_bad_rows_are_dropped() -> None:
    model = Dashboard(FrozenClock(NOW))
    model.apply_telemetry(None, None)
    assert model.telemetry.state == "missing"
    model.apply_telemetry({"query_source": [{"key": "main"}, "junk"], "skill_name": "junk"}, [{"session_id": "S"}, 3])  # type: ignore[list-item,dict-item]
    assert model.telemetry.data == {"by": {"query_source": [{"key": "main"}]}, "sessions": [{"session_id": "S"}]}
    model.apply_event("mcp_server_down", {"error": "no server named"})  # malformed: counted, not raised
    assert model.bad_events == 1
