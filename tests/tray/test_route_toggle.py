"""Toggling a route from the tray's menu changes the sidecar's routing, and the running tray
icon follows: its title counts the routes that are on, and with every route off it shows
the paused look.

The menu is the tray's own pystray menu, built for the sidecar's current state and clicked
in this process (pystray's xorg backend, the one Xvfb can host, has no menu to click); the
running `claude-sidecar tray` process sees the change through the control API like any
other client would.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp

from sidecar import paths
from sidecar.testing.fake_anthropic import FakeAnthropic, Text
from sidecar.testing.harness import ChildSidecar, anthropic_config, start_child
from tests.tray.conftest import choose, control, eventually, post_message, shows
from tests.tray.x11 import SystemTray
from tray.app import TrayApp
from tray.state import Route, TrayState

ROUTES = """
[[routes]]
name = "background-cheap"
match = { scenario = "background" }
targets = [{ provider = "anthropic", model = "claude-haiku-4-5" }]

[[routes]]
name = "default"
match = { model = "*" }
targets = [{ provider = "anthropic" }]
"""
# Opus 4.8: $5/M input, $25/M output: $3.00 for this request.
USAGE = {"input_tokens": 400_000, "output_tokens": 40_000}
SPENT = "claude-sidecar: $3.00 today · $3.00 this month"
TOOL = {
    "name": "get_weather",
    "description": "Weather for a city.",
    "input_schema": {"type": "object"},
}


async def enabled(client: aiohttp.ClientSession, child: ChildSidecar) -> dict[str, bool]:
    """Each route's `enabled`, as the control API reports it."""
    body = await control(client, child.url, child.token, "GET", "/routes")
    return {r["name"]: r["enabled"] for r in body["routes"]}


async def test_a_route_toggled_from_the_menu(
    pystray: ModuleType,
    systray: SystemTray,
    tray_process: subprocess.Popen[bytes],
    fake: FakeAnthropic,
    hermetic_env: Path,
    client: aiohttp.ClientSession,
) -> None:
    child = await asyncio.to_thread(start_child, hermetic_env, anthropic_config(fake.url, ROUTES))
    app = TrayApp(paths.resolve(), interval=1.0)
    try:
        fake.script(Text("hi", usage=USAGE))
        await post_message(client, child.url, tools=[TOOL])  # with tools: not a background call
        [icon] = await eventually(systray.icons, "the tray icon to dock")
        both_on = (Route("background-cheap", True), Route("default", True))
        await shows(
            systray,
            icon,
            SPENT + " · 2/2 routes on",
            TrayState(running=True, today_usd=3.0, routes=both_on),
        )

        state = await current(app)
        assert state.routes is not None and [r.name for r in state.routes] == [
            "background-cheap",
            "default",
        ]
        assert state.routes[1].last_upstream is not None and state.routes[
            1
        ].last_upstream.startswith("anthropic")
        app.poller.start(state)

        choose(pystray, app, state, "background-cheap (not used yet)")
        await eventually(
            lambda: _equal(enabled(client, child), {"background-cheap": False, "default": True}),
            "the route to be off",
        )
        one_on = (Route("background-cheap", False), Route("default", True))
        await shows(
            systray,
            icon,
            SPENT + " · 1/2 routes on",
            TrayState(running=True, today_usd=3.0, routes=one_on),
        )

        state = await current(app)
        [default_item] = [r for r in state.routes or () if r.name == "default"]
        choose(pystray, app, state, f"default → {default_item.last_upstream}")
        await eventually(
            lambda: _equal(enabled(client, child), {"background-cheap": False, "default": False}),
            "both routes off",
        )
        none_on = (Route("background-cheap", False), Route("default", False))
        await shows(
            systray,
            icon,
            "claude-sidecar: paused, every route is off · $3.00 today · $3.00 this month",
            TrayState(running=True, today_usd=3.0, routes=none_on),
        )

        choose(pystray, app, await current(app), "background-cheap (not used yet)")
        await eventually(
            lambda: _equal(enabled(client, child), {"background-cheap": True, "default": False}),
            "the route back on",
        )
        await shows(
            systray,
            icon,
            SPENT + " · 1/2 routes on",
            TrayState(
                running=True,
                today_usd=3.0,
                routes=(Route("background-cheap", True), Route("default", False)),
            ),
        )
    finally:
        app.poller.stop()
        assert child.stop() == 0


async def current(app: TrayApp) -> TrayState:
    """The sidecar's state as the tray reads it."""
    state = await asyncio.to_thread(app.poller.fetch)
    assert state.running, state.problem
    return state


async def _equal(got: Any, want: dict[str, bool]) -> bool:
    return bool(await got == want)
