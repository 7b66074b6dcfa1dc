"""A real daemon in semantic mode: the event loop keeps serving while the embedding model
loads, the model then serves paraphrases, and `claude-sidecar cache stats|clear` work with
and without a running daemon."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from sidecar.testing.fake_anthropic import FakeAnthropic, Text
from sidecar.testing.harness import ChildSidecar, start_child
from tests.sidecar.cache.conftest import HEADERS, cache_config, request

QUESTION = "What does the function parse_date in utils.py do?"
PARAPHRASE = "Can you tell me what the function parse_date in utils.py does?"


async def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLAUDE_SIDECAR_HOME": str(home), "CLAUDE_SIDECAR_CONFIG": str(home / "config.toml")}
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "sidecar", *args], env=env, capture_output=True, text=True, timeout=60
    )


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

            shown = await cli(hermetic_env, "cache", "stats", "--json")
            assert shown.returncode == 0, shown.stderr
            data = json.loads(shown.stdout)
            assert data["hits_exact"] == 1 and data["hits_semantic"] == 1 and data["embedder"] == "ready"
            cleared = await cli(hermetic_env, "cache", "clear")
            assert cleared.returncode == 0 and "cleared 2 cached answers" in cleared.stdout
            assert await ask(client, sc, QUESTION) == "miss"
        finally:
            assert await asyncio.to_thread(sc.stop) == 0
        assert len(fake.requests) == 3

    # Without a daemon the CLI reads the store itself; the counters survived the stop.
    shown = await cli(hermetic_env, "cache", "stats")
    assert shown.returncode == 0, shown.stderr
    assert "mode:      semantic" in shown.stdout and "1 exact, 1 semantic" in shown.stdout
    assert "entries:   1" in shown.stdout
    cleared = await cli(hermetic_env, "cache", "clear")
    assert "cleared 1 cached answer" in cleared.stdout
    assert json.loads((await cli(hermetic_env, "cache", "stats", "--json")).stdout)["entries"] == 0
