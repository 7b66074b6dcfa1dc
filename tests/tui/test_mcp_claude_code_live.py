"""The MCP and Claude Code tabs against a real `claude-sidecar` process: a real stdio MCP
server behind its gateway, called through the MCP SDK's client, and Claude Code telemetry
(OTLP/HTTP JSON, as the client exports it) joined to a priced request of the same session."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from textual.widgets import DataTable, Static

from sidecar.testing.fake_anthropic import FakeAnthropic, Text
from sidecar.testing.harness import ChildSidecar, anthropic_config
from tests.sidecar.mcp.conftest import TOY, stdio_server
from tests.tui.conftest import SIZE, live_app, send, start, stop, wait_until
from tui.app import SidecarDashboard

SESSION = "7a2b9c1d-0000-4000-8000-0000000000cc"


@contextlib.asynccontextmanager
async def mcp_client(child: ChildSidecar) -> AsyncIterator[ClientSession]:
    """The MCP SDK's client on the sidecar's /mcp with the local token."""
    async with httpx.AsyncClient(headers={"x-sidecar-token": child.token}, timeout=60, trust_env=False) as http:
        async with streamable_http_client(f"{child.url}/mcp", http_client=http) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def cell(app: SidecarDashboard, table_id: str, row: str, column: int) -> str | None:
    """One cell of a table in the app as the user reads it; None while the row is absent."""
    table: DataTable[object] = app.query_one(table_id, DataTable)
    if row not in table.rows:
        return None
    return str(table.get_row(row)[column])


def text_of(app: SidecarDashboard, selector: str) -> str:
    """What a Static shows, as plain text."""
    return str(app.query_one(selector, Static).render())


def attr(key: str, value: object) -> dict[str, object]:
    """An OTLP/JSON attribute."""
    return {"key": key, "value": {"doubleValue": value} if isinstance(value, float) else
                                 {"asInt": value} if isinstance(value, int) else {"stringValue": str(value)}}  # fmt: skip


def logs(ts_ns: int) -> dict[str, object]:
    """Two api_request events of the session: one from the main loop, one from a subagent."""
    def record(source: str, cost: float) -> dict[str, object]:
        return {"timeUnixNano": str(ts_ns), "body": {"stringValue": "claude_code.api_request"},
                "attributes": [attr("event.name", "api_request"), attr("session.id", SESSION), attr("prompt.id", "p1"),
                               attr("query_source", source), attr("cost_usd", cost), attr("request_id", f"req_{source}")]}  # fmt: skip

    return {"resourceLogs": [{"scopeLogs": [{"logRecords": [record("main", 0.04), record("subagent", 0.01)]}]}]}


def metrics(ts_ns: int) -> dict[str, object]:
    """90 lines added, 30 removed and 2 commits in the session."""
    def point(value: int, *extra: dict[str, object]) -> dict[str, object]:
        return {"timeUnixNano": str(ts_ns), "asInt": str(value), "attributes": [attr("session.id", SESSION), *extra]}

    return {"resourceMetrics": [{"scopeMetrics": [{"metrics": [
        {"name": "claude_code.lines_of_code.count", "sum": {"dataPoints": [point(90, attr("type", "added")), point(30, attr("type", "removed"))]}},
        {"name": "claude_code.commit.count", "sum": {"dataPoints": [point(2)]}},
    ]}]}]}  # fmt: skip


async def test_mcp_tab_shows_servers_calls_errors_and_a_server_going_down(fake: FakeAnthropic, hermetic_env: Path) -> None:
    config = anthropic_config(fake.url) + stdio_server("toy", TOY)
    child = await start(hermetic_env, config)
    try:
        app = live_app()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("8")
            await wait_until(pilot, lambda: cell(app, "#mcp-servers", "toy", 1) == "up", "the toy server up", within=30)
            assert cell(app, "#mcp-servers", "toy", 3) == "5"  # add, mul, shout, wipe, die
            assert "1 of 1 up" in text_of(app, "#mcp-summary") and "Code Mode off" in text_of(app, "#mcp-summary")
            async with mcp_client(child) as session:
                assert (await session.call_tool("toy__add", {"a": 2, "b": 3})).isError is False
                assert (await session.call_tool("toy__add", {"a": "x", "b": 3})).isError is True
                await wait_until(pilot, lambda: cell(app, "#mcp-tools", "toy/add", 2) == "2", "two calls of add")
                assert cell(app, "#mcp-tools", "toy/add", 3) == "1"  # one error
                assert cell(app, "#mcp-servers", "toy", 5) == "2" and cell(app, "#mcp-servers", "toy", 6) == "1"
                with contextlib.suppress(Exception):
                    await session.call_tool("toy__die", {})
            # The server's exit reaches the tab through the event bus, then its restart.
            await wait_until(pilot, lambda: cell(app, "#mcp-servers", "toy", 1) == "down" or _restarted(app), "the server down", within=30)
            await wait_until(pilot, lambda: _restarted(app), "the server up again", within=30)
    finally:
        await stop(child)


def _restarted(app: SidecarDashboard) -> bool:
    restarts = cell(app, "#mcp-servers", "toy", 8)
    return cell(app, "#mcp-servers", "toy", 1) == "up" and restarts is not None and int(restarts) >= 1


async def test_claude_code_tab_shows_spend_by_source_and_lines_per_dollar(fake: FakeAnthropic, hermetic_env: Path) -> None:
    fake.script(Text("done", usage={"input_tokens": 100_000, "output_tokens": 4_000}))  # $0.50 + $0.10 on Opus 4.8
    child = await start(hermetic_env, anthropic_config(fake.url))
    try:
        app = live_app()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("7")
            await wait_until(pilot, lambda: "none recorded" in text_of(app, "#attribution-summary"), "the empty telemetry report")
            await send(child.url, SESSION, stream=False)
            ts_ns = int(app.model.clock.now() * 1e9)
            js = {"content-type": "application/json"}
            async with aiohttp.ClientSession() as s:
                for signal, export in (("logs", logs(ts_ns)), ("metrics", metrics(ts_ns))):
                    async with s.post(f"{child.url}/v1/{signal}", data=json.dumps(export), headers=js) as resp:
                        assert resp.status == 200, await resp.text()
            await wait_until(pilot, lambda: cell(app, "#attribution-table", "query_source=subagent", 1) == "1", "the subagent row", within=20)
            assert cell(app, "#attribution-table", "query_source=main", 5) == "$0.0400"  # no usage row matched: the client's estimate
            assert cell(app, "#attribution-table", "none:skill_name", 0) == "  not reported by this Claude Code"
            await wait_until(pilot, lambda: "2 commits" in text_of(app, "#attribution-summary"), "the session's lines and commits")
            summary = text_of(app, "#attribution-summary")
            # The ledger's $0.60 for the session: 120 lines changed and 2 commits are 200 lines and 3.33 commits per dollar.
            assert "1 session · $0.6000 in the ledger" in summary and "+90 / -30 lines" in summary, summary
            assert "200 lines changed" in summary and "3.33 commits" in summary and "$0.3000 per commit" in summary, summary
    finally:
        await stop(child)
