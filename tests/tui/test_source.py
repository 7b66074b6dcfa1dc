"""The live source against a control API on loopback: what it does with each kind of answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from sidecar.tasks import TaskSet
from tui import locate
from tui.client import ApiError, Unreachable
from tui.clock import SystemClock
from tui.source import Backoff, LiveSource
from tui.state import Dashboard


@dataclass
class ControlAPI:
    """A control API whose answers each test sets: `answers[path] = (status, body)`."""

    answers: dict[str, tuple[int, Any]] = field(default_factory=dict)
    events: list[bytes] = field(default_factory=list)  # raw SSE written on each connection
    hold_open: bool = True  # keep the stream open after the events
    connections: int = 0
    seen: list[str] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(f"{request.method} {request.path_qs}")
        if request.headers.get("Authorization") != "Bearer tok":
            return web.json_response({"type": "error", "error": {"type": "authentication_error", "message": "bad token"}}, status=401)
        if request.path == "/sidecar/v1/events":
            return await self.stream(request)
        status, body = self.answers.get(request.path, (404, {"type": "error", "error": {"type": "not_found_error", "message": "no such thing"}}))
        return web.json_response(body, status=status)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self.connections += 1
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for chunk in self.events:
            await resp.write(chunk)
        if self.hold_open:
            await asyncio.sleep(3600)
        return resp


@pytest.fixture
async def api() -> AsyncIterator[ControlAPI]:
    state = ControlAPI()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


def event(kind: str, data: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data) if not isinstance(data, str) else data}\n\n".encode()


async def eventually(check: Callable[[], object], what: str, within: float = 10.0) -> None:
    """Poll `check` until it is true; fail naming `what` after `within` seconds."""
    for _ in range(int(within / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"gave up waiting for {what}")


async def run_until(source: LiveSource, model: Dashboard, check: Callable[[], object]) -> None:
    """Run `source` into `model` until `check()` holds."""
    tasks = TaskSet()
    tasks.spawn(source.run(model), name="source")
    try:
        await eventually(check, "the source to get there")
    finally:
        await tasks.close()


def source_for(api: ControlAPI, token: str = "tok") -> LiveSource:
    return LiveSource(locate.fixed(api.url, token), backoff=Backoff(0.02, 0.05), poll_interval=0.2, settle=0.05)


async def test_missing_features_and_a_priced_request(api: ControlAPI) -> None:
    api.answers["/sidecar/v1/status"] = (200, {"pid": 9, "usage": {"timezone": "UTC", "today": {"key": "2026-01-01", "requests": 3, "cost_usd": 1.0}}})
    api.answers["/sidecar/v1/usage"] = (200, {"group_by": "x", "rows": [{"key": "claude-opus-4-8", "requests": 3, "cost_usd": 1.0}]})
    api.answers["/sidecar/v1/cache"] = (200, {"mode": "off"})
    api.events = [event("hello", {"pid": 9, "version": "0.1.0"}), b": keepalive\n\n", event("request", {"id": "r1", "ts": 1.0, "cost_usd": 0.5, "status": 200})]
    model = Dashboard(SystemClock())
    await run_until(source_for(api), model, lambda: model.policy.state != "loading" and "r1" in model.rows)
    assert model.connection.state == "connected" and model.connection.pid == 9
    assert (model.routes.state, model.policy.state, model.cache.state) == ("missing", "missing", "ready")
    assert model.cache.data == {"mode": "off"}
    assert model.rows["r1"].cost_usd == 0.5
    assert "claude-opus-4-8" in model.by_model
    assert any(s.startswith("GET /sidecar/v1/usage?group_by=session&since=") for s in api.seen)


async def test_a_refused_token_is_said_and_retried(api: ControlAPI) -> None:
    model = Dashboard(SystemClock())
    await run_until(source_for(api, token="wrong"), model, lambda: model.connection.state == "retrying" and len(api.seen) >= 2)
    assert "refused the local token (401: bad token)" in model.connection.detail
    assert model.connection.retry_at is not None


async def test_a_closed_stream_reconnects_and_bad_events_are_counted(api: ControlAPI) -> None:
    api.hold_open = False
    api.events = [event("hello", {"pid": 1}), event("request", "{not json"), event("request", ["a list"])]
    model = Dashboard(SystemClock())
    await run_until(source_for(api), model, lambda: api.connections >= 3)
    assert model.bad_events >= 4  # two per connection
    assert "not JSON" in model.alerts[0].message


async def test_nothing_listening_then_actions_fail_clearly(api: ControlAPI) -> None:
    dead = LiveSource(locate.fixed("http://127.0.0.1:9", "tok"), backoff=Backoff(0.02, 0.05))
    model = Dashboard(SystemClock())
    await run_until(dead, model, lambda: model.connection.state == "retrying")
    assert model.connection.url == "http://127.0.0.1:9" and model.connection.detail
    with pytest.raises(Unreachable, match="not connected"):
        await dead.set_route("default", False)


async def test_toggling_an_unknown_route_is_an_api_error(api: ControlAPI) -> None:
    api.events = [event("hello", {"pid": 1})]
    model = Dashboard(SystemClock())
    source = source_for(api)
    tasks = TaskSet()
    tasks.spawn(source.run(model), name="source")
    try:
        await eventually(lambda: model.connection.state == "connected", "the connection")
        with pytest.raises(ApiError) as e:
            await source.set_route("no/such route", False)
        assert e.value.status == 404 and e.value.message == "no such thing"
        assert "POST /sidecar/v1/routes/no%2Fsuch%20route/disable" in api.seen
    finally:
        await tasks.close()


def test_not_running_names_the_state_file(tmp_path: Any) -> None:
    from sidecar import paths

    p = paths.resolve({"CLAUDE_SIDECAR_HOME": str(tmp_path)})
    with pytest.raises(locate.NotRunning, match=r"no sidecar is running .*start it with `claude-sidecar start`"):
        locate.from_state(p)()


async def test_mcp_every_refresh_claude_code_telemetry_at_most_every_interval(api: ControlAPI) -> None:
    """The telemetry reports cost the daemon a join over the ledger each: fetched once on
    connecting, then not again within `telemetry_interval`, while /mcp follows every refresh."""
    api.answers["/sidecar/v1/mcp"] = (200, {"servers": [{"name": "fs", "state": "up"}], "tools": [], "code_mode": False})
    api.answers["/sidecar/v1/claude-code/sessions"] = (200, {"sessions": [{"session_id": "S", "cost_usd": 1.0, "commits": 2}]})
    api.answers["/sidecar/v1/claude-code/spend"] = (200, {"by": "x", "rows": [{"key": "main", "requests": 1, "cost_usd": 1.0}]})
    api.events = [event("hello", {"pid": 1})]
    model = Dashboard(SystemClock())
    source = LiveSource(locate.fixed(api.url, "tok"), backoff=Backoff(0.02, 0.05), poll_interval=0.05, settle=0.05, telemetry_interval=3600)
    await run_until(source, model, lambda: sum(s.startswith("GET /sidecar/v1/mcp") for s in api.seen) >= 4)
    assert model.mcp.state == "ready" and model.mcp.data["servers"][0]["name"] == "fs"
    assert model.telemetry.state == "ready" and model.telemetry.data["sessions"][0]["commits"] == 2
    assert model.telemetry.data["by"]["query_source"] == [{"key": "main", "requests": 1, "cost_usd": 1.0}]
    assert sum(s.startswith("GET /sidecar/v1/claude-code/sessions?since=") for s in api.seen) == 1
    assert sum("/claude-code/spend?by=query_source&since=" in s for s in api.seen) == 1


async def test_an_older_sidecar_without_telemetry_or_mcp_apis(api: ControlAPI) -> None:
    api.events = [event("hello", {"pid": 1})]
    model = Dashboard(SystemClock())
    await run_until(source_for(api), model, lambda: model.telemetry.state != "loading" and model.mcp.state != "loading")
    assert (model.telemetry.state, model.mcp.state) == ("missing", "missing")
