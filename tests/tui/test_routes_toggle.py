"""Toggling a route in the dashboard changes where the sidecar sends the next request.

Two routes match every model; the first one wins while it is enabled. Each points at its
own fake Anthropic upstream, so the upstream that received a request tells which route
took it, independently of what the dashboard shows.
"""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable

from sidecar.testing.fake_anthropic import FakeAnthropic
from tests.tui.conftest import SIZE, cells, live_app, send, shown, start, stop, wait_until
from tui.widgets.routes import RoutesView


def two_routes(a: FakeAnthropic, b: FakeAnthropic) -> str:
    return f"""
[[providers]]
name = "up-a"
type = "anthropic"
base_url = "{a.url}"

[[providers]]
name = "up-b"
type = "anthropic"
base_url = "{b.url}"

[[routes]]
name = "primary"
match = {{ model = "*" }}
targets = [{{ provider = "up-a" }}]

[[routes]]
name = "secondary"
match = {{ model = "*" }}
targets = [{{ provider = "up-b" }}]
"""


def enabled(app: object, name: str) -> bool | None:
    for r in RoutesView.routes(app.model):  # type: ignore[attr-defined]
        if r.get("name") == name:
            return r.get("enabled", True) is not False
    return None


async def test_disabling_a_route_in_the_dashboard_sends_the_next_request_elsewhere(hermetic_env: Path) -> None:
    async with FakeAnthropic() as a, FakeAnthropic() as b:
        child = await start(hermetic_env, two_routes(a, b))
        try:
            app = live_app()
            async with app.run_test(size=SIZE) as pilot:
                await wait_until(pilot, lambda: enabled(app, "primary") is True, "the routes")
                first = (await send(child.url, "S-1")).headers["x-sidecar-request-id"]
                await wait_until(pilot, lambda: shown(app, first), "the first request")
                assert (len(a.requests), len(b.requests)) == (1, 0)
                assert cells(app, first)["route"] == "primary"

                await pilot.press("3")  # the routes tab
                await wait_until(pilot, lambda: app.query_one("#routes-table", DataTable).row_count > 0, "the route rows")
                table = app.query_one("#routes-table", DataTable)
                table.focus()
                table.move_cursor(row=table.get_row_index("route:primary"))
                await pilot.press("space")
                await wait_until(pilot, lambda: enabled(app, "primary") is False, "primary to be disabled")
                await pilot.press("1")  # back to the live table

                second = (await send(child.url, "S-1")).headers["x-sidecar-request-id"]
                await wait_until(pilot, lambda: shown(app, second), "the second request")
                assert (len(a.requests), len(b.requests)) == (1, 1)
                assert cells(app, second)["route"] == "secondary"

                await pilot.press("3", "space")  # the cursor is still on primary: enable it again
                await wait_until(pilot, lambda: enabled(app, "primary") is True, "primary to be enabled")
                await pilot.press("1")
                third = (await send(child.url, "S-1")).headers["x-sidecar-request-id"]
                await wait_until(pilot, lambda: shown(app, third), "the third request")
                assert (len(a.requests), len(b.requests)) == (2, 1)
        finally:
            await stop(child)
