"""The tray's control API client against a real sidecar on loopback."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from pathlib import Path

import aiohttp
import pytest

from sidecar import paths
from sidecar.daemon_state import write_state
from sidecar.testing.fake_anthropic import FakeAnthropic, Text
from sidecar.testing.harness import InProcessSidecar
from tests.tray.conftest import eventually, post_message
from tray.client import ControlClient, Unreachable

# Opus 4.8: $5/M input, $25/M output.
USAGE = {"input_tokens": 200_000, "output_tokens": 40_000}
COST = (200_000 * 5 + 40_000 * 25) / 1e6


async def test_fetch_state_shows_todays_spend(
    fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession
) -> None:
    tray = ControlClient(sidecar.paths)
    before = await asyncio.to_thread(tray.fetch_state)
    assert before.running and before.address == sidecar.url
    assert (before.today_usd, before.today_requests) == (0.0, 0)

    fake.script(Text("hi", usage=USAGE))
    await post_message(client, sidecar.url)

    after = await eventually(
        lambda: asyncio.to_thread(lambda: (s := tray.fetch_state()).today_requests == 1 and s),
        "the request in /status",
    )
    assert after.today_usd == pytest.approx(COST)
    assert after.month_usd == pytest.approx(COST)
    # No routes or budgets are configured; an endpoint a sidecar lacks reads as absent.
    assert after.routes in (None, ())
    assert after.budgets in (None, ())
    async with client.get(
        sidecar.url + "/sidecar/v1/cache", headers={"Authorization": f"Bearer {sidecar.token}"}
    ) as resp:
        cache = await resp.json() if resp.status == 200 else None
    assert (after.cache.mode if after.cache else None) == (cache["mode"] if cache else None)


async def test_a_missing_endpoint_is_none_only_when_optional(sidecar: InProcessSidecar) -> None:
    tray = ControlClient(sidecar.paths)

    assert await asyncio.to_thread(tray.call, "GET", "/no-such-endpoint", optional=True) is None
    with pytest.raises(Unreachable, match=r"^HTTP 404: "):
        await asyncio.to_thread(tray.call, "GET", "/no-such-endpoint")


async def test_a_wrong_token_is_named(sidecar: InProcessSidecar) -> None:
    sidecar.paths.token_file.write_text("not-the-token\n")

    with pytest.raises(Unreachable, match="the local token was refused"):
        await asyncio.to_thread(ControlClient(sidecar.paths).fetch_state)


def test_not_running_without_a_state_file(hermetic_env: Path) -> None:
    with pytest.raises(Unreachable, match=r"^not running$"):
        ControlClient(paths.resolve()).fetch_state()


def test_not_answering_after_a_crash(hermetic_env: Path) -> None:
    """A daemon killed with -9 leaves its state file behind, naming a closed port."""
    p = paths.resolve()
    p.ensure()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    write_state(p, {"pid": 1, "url": url})
    p.token_file.write_text("t\n")

    with pytest.raises(Unreachable, match=f"^not answering at {re.escape(url)}$"):
        ControlClient(p).fetch_state()


def test_a_state_file_without_a_token(hermetic_env: Path) -> None:
    p = paths.resolve()
    p.ensure()
    write_state(p, {"pid": 1, "url": "http://127.0.0.1:9"})

    with pytest.raises(Unreachable, match="no local token"):
        ControlClient(p).fetch_state()


async def test_events_name_each_event(
    fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession
) -> None:
    tray = ControlClient(sidecar.paths)
    stop = threading.Event()
    seen: list[str] = []

    def listen() -> None:
        for kind in tray.events(stop):
            seen.append(kind)
            if kind == "request":
                stop.set()

    async def drive() -> None:
        await eventually(lambda: seen, "the hello event")
        await post_message(client, sidecar.url, stream=True)

    try:
        await asyncio.wait_for(asyncio.gather(asyncio.to_thread(listen), drive()), 20)
    finally:
        stop.set()

    assert seen == ["hello", "request_started", "request"]


def test_unreadable_state_is_not_running(hermetic_env: Path) -> None:
    p = paths.resolve()
    p.ensure()
    p.state_file.write_text(json.dumps({"pid": 1}))

    with pytest.raises(Unreachable, match=r"^not running$"):
        ControlClient(p).fetch_state()
