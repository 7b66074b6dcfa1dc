"""The poller: events refresh the state between polls, a vanished sidecar shows as down,
and menu jobs run on the worker thread with their failures reported."""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from pathlib import Path

import aiohttp
import pytest

from sidecar import paths
from sidecar.daemon_state import write_state
from sidecar.testing.fake_anthropic import FakeAnthropic, Text
from sidecar.testing.harness import InProcessSidecar, anthropic_config, sidecar_in_process
from tests.tray.conftest import control, eventually, post_message
from tray.client import ControlClient, Unreachable
from tray.state import TrayState
from tray.worker import Poller

NEVER = 3600.0  # a poll interval no test waits for: only events and jobs wake the poller


async def listening(client: aiohttp.ClientSession, sc: InProcessSidecar) -> None:
    """Wait until the poller's event listener is connected."""

    async def subscribed() -> bool:
        status = await control(client, sc.url, sc.token, "GET", "/status")
        return bool(status["event_subscribers"] == 1)

    await eventually(subscribed, "the event listener to connect")


async def next_state(published: queue.Queue[TrayState], wait: float) -> TrayState | None:
    try:
        return await asyncio.to_thread(published.get, True, wait)
    except queue.Empty:
        return None


async def test_a_request_event_refreshes_before_the_next_poll(
    fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession
) -> None:
    published: queue.Queue[TrayState] = queue.Queue()
    poller = Poller(ControlClient(sidecar.paths), published.put, interval=NEVER)
    first = await asyncio.to_thread(poller.fetch)
    assert first.running and first.today_requests == 0
    fake.script(*[Text("hi", usage={"input_tokens": 1000, "output_tokens": 100})] * 10)
    poller.start(first)
    try:
        await listening(client, sidecar)
        seen: list[TrayState] = []
        # Each request's event wakes the poller; the ledger may land a request after the
        # refresh it triggered, so a later request's refresh shows it at the latest. Other
        # states may come first (one with the request in flight, say).
        for _ in range(10):
            await post_message(client, sidecar.url)
            while (state := await next_state(published, 5)) is not None:
                seen.append(state)
                if state.today_requests:
                    break
            if seen and seen[-1].today_requests:
                break
    finally:
        poller.stop()
    assert seen and seen[-1].today_requests >= 1, f"no published state showed a request: {seen}"
    assert seen[-1].running and seen[-1].today_usd > 0


async def test_a_sidecar_that_goes_away_shows_down(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    published: queue.Queue[TrayState] = queue.Queue()
    async with sidecar_in_process(anthropic_config(fake.url), hermetic_env) as sc:
        write_state(sc.paths, {"pid": os.getpid(), "url": sc.url})
        poller = Poller(ControlClient(sc.paths), published.put, interval=NEVER)
        first = await asyncio.to_thread(poller.fetch)
        assert first.running
        poller.start(first)
        await listening(client, sc)
    try:
        # The closing sidecar ends the event stream; the poller looks again and finds it gone.
        gone = await next_state(published, 20)
    finally:
        poller.stop()
    assert gone is not None and not gone.running
    assert gone.problem == f"not answering at {sc.url}"


async def test_jobs_run_on_the_poll_thread_and_failures_are_reported(hermetic_env: Path) -> None:
    published: queue.Queue[TrayState] = queue.Queue()
    errors: queue.Queue[str] = queue.Queue()
    poller = Poller(
        ControlClient(paths.resolve()), published.put, interval=NEVER, on_job_error=errors.put
    )
    ran_on: list[str] = []
    poller.start(TrayState(running=True))  # what was shown; the sidecar is not running
    try:
        down = await next_state(published, 20)
        poller.submit(lambda: ran_on.append(threading.current_thread().name))

        def fails() -> None:
            raise Unreachable("not answering at http://127.0.0.1:9")

        poller.submit(fails)
        error = await asyncio.to_thread(errors.get, True, 20)
    finally:
        poller.stop()
    assert down is not None and down.problem == "not running"
    assert ran_on == ["tray-poll"]
    assert error == "not answering at http://127.0.0.1:9"
    with pytest.raises(queue.Empty):
        published.get_nowait()  # still down: nothing new to show
