"""The dashboard opens full: requests made before it started (or while it was cut off) are in
its table with their figures, and the burn rate reads the ledger's last hour at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from textual.widgets import Static

from sidecar import paths
from sidecar.testing.fake_anthropic import FakeAnthropic, Text
from sidecar.testing.harness import anthropic_config
from tests.tui.conftest import BODY, SIZE, cells, send, shown, start, stop, wait_until
from tui import locate
from tui.app import SidecarDashboard
from tui.source import Backoff, LiveSource
from tui.widgets.requests import RequestTable

# Opus 4.8: $5/M input, $25/M output.
USAGE = [({"input_tokens": 1000, "output_tokens": 200}, 0.01), ({"input_tokens": 2000, "output_tokens": 400}, 0.02),
         ({"input_tokens": 100, "output_tokens": 20}, 0.001)]  # fmt: skip


class Gate:
    """A locator that finds the sidecar only while open: the dashboard is cut off while closed."""

    def __init__(self) -> None:
        self.open = True
        self._find = locate.from_state(paths.resolve())

    def __call__(self) -> locate.Target:
        if not self.open:
            raise locate.NotRunning("closed by the test")
        return self._find()


async def count_tokens(url: str) -> str:
    async with aiohttp.ClientSession() as s, s.post(url + "/v1/messages/count_tokens", json=BODY, headers={"x-api-key": "k"}) as resp:
        assert resp.status == 200
        return resp.headers["x-sidecar-request-id"]


async def wait_for_ledger(url: str, token: str, requests: int) -> None:
    """Until the ledger has written `requests` model requests for today (it writes in batches)."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s:
        for _ in range(200):
            async with s.get(url + "/sidecar/v1/status") as resp:
                today = ((await resp.json()).get("usage") or {}).get("today") or {}
            if today.get("requests") == requests:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"the ledger never reached {requests} requests")


async def test_requests_from_before_the_dashboard_opened_are_in_its_table(fake: FakeAnthropic, hermetic_env: Path) -> None:
    fake.script(*(Text("answer", usage=u) for u, _ in USAGE))
    child = await start(hermetic_env, anthropic_config(fake.url))
    try:
        first = (await send(child.url, "S-early")).headers["x-sidecar-request-id"]
        second = (await send(child.url, "S-early", stream=False)).headers["x-sidecar-request-id"]
        counted = await count_tokens(child.url)
        await wait_for_ledger(child.url, child.token, 2)

        gate = Gate()
        source = LiveSource(gate, backoff=Backoff(0.05, 0.2), poll_interval=1.0, settle=0.3)
        app = SidecarDashboard(source)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: all(shown(app, i) for i in (first, second, counted)), "the earlier requests")

            assert (cells(app, first)["cost"], cells(app, first)["in"], cells(app, first)["out"]) == ("$0.0100", "1.0k", "200")
            assert (cells(app, second)["cost"], cells(app, second)["in"], cells(app, second)["out"]) == ("$0.0200", "2.0k", "400")
            assert cells(app, first)["model"] == "opus-4-8 → anthropic" and cells(app, first)["status"] == "200"
            assert cells(app, counted)["cost"] == "free" and cells(app, counted)["model"].startswith("count_tokens")
            table = app.query_one(RequestTable)
            assert table.row_keys() == [first, second, counted]  # oldest at the top, as live rows
            # The burn rate is the ledger's last hour, not "since the dashboard opened".
            assert app.model.burn_rate() == pytest.approx(0.03)
            await wait_until(pilot, lambda: app.model.today.requests == 2, "the ledger's totals")
            await pilot.pause(1.1)  # the header redraws every second
            header = str(app.query_one("#header", Static).render())
            assert "2 req (+1 count) ·" in header  # the count_tokens call, apart
            assert "Burn $0.0300/h" in header

            # Cut off: the sidecar restarts and serves a request the dashboard cannot see live.
            gate.open = False
            await stop(child)
            await wait_until(pilot, lambda: app.model.connection.state != "connected", "the disconnect")
            child = await start(hermetic_env, anthropic_config(fake.url))
            missed = (await send(child.url, "S-missed")).headers["x-sidecar-request-id"]
            await wait_for_ledger(child.url, child.token, 3)
            assert missed not in app.model.rows
            gate.open = True
            source.reconnect_now()

            await wait_until(pilot, lambda: shown(app, missed), "the request made while cut off")
            assert cells(app, missed)["cost"] == "$0.0010"
            assert table.row_keys() == [first, second, counted, missed]
            assert app.model.burn_rate() == pytest.approx(0.031)
    finally:
        await stop(child)
