"""A real daemon in semantic mode: the event loop keeps serving while the embedding model
loads, the model then serves paraphrases, and `claude-sidecar cache stats|clear` work with
and without a running daemon."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from sidecar.testing.cli import cli
from sidecar.testing.fake_anthropic import FakeAnthropic, Text
from sidecar.testing.harness import ChildSidecar, start_child
from tests.sidecar.cache.conftest import HEADERS, cache_config, request

QUESTION = "What does the function parse_date in utils.py do?"
PARAPHRASE = "Can you tell me what the function parse_date in utils.py does?"


async def ask(client: aiohttp.ClientSession, sc: ChildSidecar, text: str) -> str:
    async with client.post(sc.url + "/v1/messages", json=request(text), headers=HEADERS) as resp:
        assert resp.status == 200, await resp.text()
        await resp.read()
        return resp.headers["x-sidecar-cache"]


async def stats(client: aiohttp.ClientSession, sc: ChildSidecar) -> dict[str, Any]:
    async with client.get(sc.url + "/sidecar/v1/cache", headers={"Authorization": f"Bearer {sc.token}"}) as resp:
        data: dict[str, Any] = await resp.json()
        return data


async def until(client: aiohttp.ClientSession, sc: ChildSidecar, state: str, limit: float) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while (s := await stats(client, sc))["embedder"] != state:
        assert time.monotonic() < deadline, f"the embedder is still {s['embedder']} ({s.get('embedder_error')})"
        await asyncio.sleep(0.05)
    return s


async def test_the_daemon_serves_while_the_model_loads(hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with FakeAnthropic(default=Text("It parses ISO dates.")) as fake:
        config = cache_config(fake, 'mode = "semantic"\nreask_window_seconds = 0\nembed_timeout_ms = 30000\n')
        sc = await asyncio.to_thread(start_child, hermetic_env, config)
        try:
            assert (await stats(client, sc))["embedder"] == "idle"  # nothing loaded at start-up
            assert await ask(client, sc, QUESTION) == "miss"  # storing it needs the model: loading starts
            await until(client, sc, "loading", 30)
            # While torch and the model load in the worker, other requests are served.
            assert await ask(client, sc, "How do I run the test suite of this project?") == "miss"
            assert await ask(client, sc, QUESTION) == "hit-exact"
            assert (await stats(client, sc))["embedder"] == "loading"

            ready = await until(client, sc, "ready", 300)
            assert ready["entries"] == 2
            deadline = time.monotonic() + 30
            while (await stats(client, sc))["indexed"] < 2:  # the entries stored during the load
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert await ask(client, sc, PARAPHRASE) == "hit-semantic"

            shown = await cli("cache", "stats", "--json", home=hermetic_env)
            assert shown.rc == 0, shown.err
            data = json.loads(shown.out)
            assert data["hits_exact"] == 1 and data["hits_semantic"] == 1 and data["embedder"] == "ready"
            cleared = await cli("cache", "clear", home=hermetic_env)
            assert cleared.rc == 0 and "cleared 2 cached answers" in cleared.out
            assert await ask(client, sc, QUESTION) == "miss"
        finally:
            assert await asyncio.to_thread(sc.stop) == 0
        assert len(fake.requests) == 3

    # Without a daemon the CLI reads the store itself; the counters survived the stop.
    shown = await cli("cache", "stats", home=hermetic_env)
    assert shown.rc == 0, shown.err
    assert "mode:      semantic" in shown.out and "1 exact, 1 semantic" in shown.out
    assert "entries:   1" in shown.out
    cleared = await cli("cache", "clear", home=hermetic_env)
    assert "cleared 1 cached answer" in cleared.out
    assert json.loads((await cli("cache", "stats", "--json", home=hermetic_env)).out)["entries"] == 0
