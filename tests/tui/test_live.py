"""The dashboard against a real `claude-sidecar` process and a fake Anthropic upstream."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Static

from sidecar.testing.fake_anthropic import FakeAnthropic, Text
from sidecar.testing.harness import anthropic_config
from tests.tui.conftest import SIZE, cells, live_app, send, shown, start, stop, wait_until
from tui.widgets.detail import RequestDetail
from tui.widgets.requests import RequestTable


async def test_requests_through_the_sidecar_appear_with_their_figures(fake: FakeAnthropic, hermetic_env: Path) -> None:
    fake.script(
        Text("one two three", usage={"input_tokens": 1000, "output_tokens": 200, "cache_read_input_tokens": 4000}),
        Text("four", usage={"input_tokens": 10, "output_tokens": 2}),
    )
    child = await start(hermetic_env, anthropic_config(fake.url))
    try:
        app = live_app()
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.model.connection.state == "connected", "the connection")
            await wait_until(pilot, lambda: app.model.routes.state != "loading", "the first refresh")
            first = (await send(child.url, "S-streamed")).headers["x-sidecar-request-id"]
            second = (await send(child.url, "S-plain", stream=False)).headers["x-sidecar-request-id"]
            await wait_until(pilot, lambda: shown(app, first) and shown(app, second), "both requests in the table")

            row = cells(app, first)
            # Opus 4.8: $5/M input, $25/M output, $0.50/M cache read.
            assert row["cost"] == "$0.0120"
            assert (row["in"], row["out"], row["cache_tokens"]) == ("1.0k", "200", "4.0k/0")
            assert row["model"] == "opus-4-8 → anthropic" and row["status"] == "200"
            assert row["session"] == "…reamed"
            assert row["cache"] in ("—", "miss", "bypass")  # a first request is never a hit
            assert row["latency"].endswith(("ms", " s"))
            assert cells(app, second)["cost"] == "$0.0001"  # 10 x $5/M + 2 x $25/M = $0.0001

            # The header counts both (live at once, then from the ledger's own totals).
            await wait_until(pilot, lambda: app.model.today.requests == 2 and app.model.status.get("usage"), "the totals")
            header = str(app.query_one("#header", Static).render())
            assert "Today $0.0121 · 2 req" in header
            # Routes the sidecar does not serve (yet) say so; an empty list says there are none.
            await pilot.press("3")
            await pilot.pause(0.3)
            notice = str(app.query_one("#routes-notice", Static).render())
            expected = "Routes: not configured" if app.model.routes.state == "missing" else "No routes configured"
            assert expected in notice
            await pilot.press("1")

            # Enter opens the detail of the request under the cursor (the newest).
            table = app.query_one(RequestTable)
            table.focus()
            await pilot.press("enter")
            await wait_until(pilot, lambda: isinstance(app.screen, RequestDetail), "the detail view")
            detail = app.screen
            assert isinstance(detail, RequestDetail) and detail.row.id == second
            text = str(detail.query_one("#detail-body", Static).render())
            assert "x-sidecar-request-id: " + second in text
            assert "Prompt and response bodies are not stored" in text
            await pilot.press("escape")
            await wait_until(pilot, lambda: not isinstance(app.screen, RequestDetail), "the detail to close")
    finally:
        await stop(child)


async def test_the_dashboard_follows_a_restarted_sidecar(fake: FakeAnthropic, hermetic_env: Path) -> None:
    config = anthropic_config(fake.url)
    child = await start(hermetic_env, config)
    app = live_app()
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.model.connection.pid == child.proc.pid, "the first sidecar")
            before = (await send(child.url, "S-before")).headers["x-sidecar-request-id"]
            await wait_until(pilot, lambda: shown(app, before), "the first request")

            await stop(child)
            await wait_until(pilot, lambda: app.model.connection.state != "connected", "the disconnect")
            await pilot.pause(0.3)
            line = str(app.query_one("#connection", Static).render())
            assert "retrying" in line or "connecting" in line

            child = await start(hermetic_env, config)  # a new process, on a new port
            await wait_until(pilot, lambda: app.model.connection.pid == child.proc.pid and app.model.connection.state == "connected", "the new sidecar")
            after = (await send(child.url, "S-after")).headers["x-sidecar-request-id"]
            await wait_until(pilot, lambda: shown(app, after), "a request through the new sidecar")
            assert cells(app, before)["status"] == "200"  # the old rows stay
    finally:
        await stop(child)
