"""Helpers for driving the dashboard against real sidecar processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from textual.pilot import Pilot

from sidecar import paths
from sidecar.testing.harness import ChildSidecar, start_child
from tui import locate
from tui.app import SidecarDashboard
from tui.source import Backoff, LiveSource
from tui.widgets.requests import COLUMNS, RequestTable

BODY = {"model": "claude-opus-4-8", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
SIZE = (140, 40)


def live_app() -> SidecarDashboard:
    """The dashboard as `claude-sidecar tui` builds it, retrying quickly (tests restart sidecars)."""
    source = LiveSource(locate.from_state(paths.resolve()), backoff=Backoff(0.05, 0.5), poll_interval=1.0, settle=0.3, telemetry_interval=0.5)
    return SidecarDashboard(source)


async def start(home: Path, config: str) -> ChildSidecar:
    """A `claude-sidecar start --foreground` child, started without blocking the loop."""
    return await asyncio.to_thread(start_child, home, config)


async def stop(child: ChildSidecar) -> None:
    """SIGTERM the child and wait for it."""
    await asyncio.to_thread(child.stop)


async def wait_until(pilot: Pilot[Any], check: Callable[[], object], what: str, within: float = 15.0) -> None:
    """Let the app run until `check()` is true; fail naming `what` if it never is."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await pilot.pause(0.02)


async def send(url: str, session_id: str, stream: bool = True) -> aiohttp.ClientResponse:
    """One Messages request through the sidecar, read to the end; returns the response."""
    headers = {"x-api-key": "sk-ant-test", "x-claude-code-session-id": session_id}
    async with aiohttp.ClientSession() as s, s.post(url + "/v1/messages", json={**BODY, "stream": stream}, headers=headers) as resp:
        await resp.read()
        assert resp.status == 200, resp.status
        return resp


def cells(app: SidecarDashboard, row_id: str) -> dict[str, str]:
    """One row of the live table as the user reads it, by column key."""
    table = app.query_one(RequestTable)
    return {key: str(table.get_cell(row_id, key)) for key, _, _ in COLUMNS}


def shown(app: SidecarDashboard, row_id: str) -> bool:
    """True once the live table shows the request finished."""
    table = app.query_one(RequestTable)
    return row_id in table and cells(app, row_id)["status"] not in ("…", "")
