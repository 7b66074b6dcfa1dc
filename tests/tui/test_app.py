"""The dashboard's keys, mouse and commands, on the demo data (no sidecar needed)."""

from __future__ import annotations

from typing import Any

from textual.widgets import TabbedContent

from tests.tui.conftest import wait_until
from tui.demo import NOW, demo_app, show_tab
from tui.widgets.requests import RequestTable

SIZE = (130, 40)


async def test_number_keys_and_clicks_switch_tabs_and_focus_their_table() -> None:
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await show_tab(pilot, "requests")
        tabs = app.query_one(TabbedContent)
        await pilot.press("3")
        await wait_until(pilot, lambda: tabs.active == "routes" and app.focused is not None and app.focused.id == "routes-table", "the routes tab")
        await pilot.click("#--content-tab-sessions")
        await wait_until(pilot, lambda: tabs.active == "sessions" and app.focused is not None and app.focused.id == "session-table", "the sessions tab")
        await pilot.press("1", "up", "up")
        table = app.query_one(RequestTable)
        await wait_until(pilot, lambda: tabs.active == "requests" and table.has_focus, "the live table")
        assert not table.follow and table.cursor_key == "01JDEMO0023ABCDEFGHJKMNPQ"
        await pilot.press("end")
        assert table.follow and table.cursor_key == "01JDEMOLIVE1BCDEFGHJKMNPQ"


async def test_pause_freezes_the_live_table_until_resumed() -> None:
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await show_tab(pilot, "requests")
        table = app.query_one(RequestTable)
        await pilot.press("p")
        app.model.apply_event("request", {"id": "late", "ts": NOW, "status": 200, "cost_usd": 0.5})
        await pilot.pause(0.3)
        assert "late" not in table and table.paused
        await pilot.press("p")
        await wait_until(pilot, lambda: "late" in table, "the row after resuming")
        assert table.cursor_key == "late"  # following: the cursor rides on the newest row


async def test_palette_offers_route_toggles_and_a_replay_refuses_them() -> None:
    app = demo_app()
    said: list[tuple[str, Any]] = []
    async with app.run_test(size=SIZE) as pilot:
        await show_tab(pilot, "routes")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Disable route background-cheap", "Enable route long-context", "Clear the cache", "Show Spend"} <= set(titles)
        notify = app.notify

        def capture(message: str, **kw: Any) -> None:
            said.append((message, kw.get("severity")))
            notify(message, **kw)

        app.notify = capture  # type: ignore[method-assign]
        await pilot.press("space")  # the cursor is on the first route
        await wait_until(pilot, lambda: bool(said), "the answer")
    assert said == [("could not disable background-cheap: this is a replay: there is no sidecar to change", "error")]
