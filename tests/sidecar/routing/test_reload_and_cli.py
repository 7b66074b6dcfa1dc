"""A real daemon: `claude-sidecar routes` shows and toggles routes; the config reloads on
SIGHUP and on a file change, and a bad file is refused while the old routes keep serving."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import aiohttp

from sidecar.testing.cli import cli
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import ChildSidecar, start_child
from tests.sidecar.routing.conftest import providers

HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01", "content-type": "application/json"}
BODY = json.dumps({"model": "claude-opus-4-8", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})


def routes_to(target: str, name: str = "main") -> str:
    return f'[[routes]]\nname = "{name}"\nmatch = {{ model = "*" }}\ntargets = [{{ provider = "{target}" }}]\n'


async def served_by(client: aiohttp.ClientSession, sc: ChildSidecar) -> str:
    async with client.post(sc.url + "/v1/messages", data=BODY, headers=HEADERS) as r:
        assert r.status == 200, await r.text()
        return r.headers["x-sidecar-upstream"].split("/")[0]


async def wait_for(client: aiohttp.ClientSession, sc: ChildSidecar, upstream: str) -> None:
    deadline = time.monotonic() + 10.0
    while (got := await served_by(client, sc)) != upstream:
        assert time.monotonic() < deadline, f"still served by {got}"
        await asyncio.sleep(0.1)


async def test_routes_cli_and_live_reload(hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with FakeAnthropic() as a, FakeAnthropic() as b:
        base = providers([a, b], "ab")
        sc = await asyncio.to_thread(start_child, hermetic_env, base + routes_to("a") + routes_to("b", "spare"))
        try:
            assert await served_by(client, sc) == "a"

            shown = await cli("routes", home=hermetic_env)
            assert shown.rc == 0, shown.err
            assert "main  [enabled]" in shown.out and "last upstream: a" in shown.out
            assert "breaker closed" in shown.out

            off = await cli("routes", "disable", "main", home=hermetic_env)
            assert off.rc == 0 and "route main is now disabled" in off.out
            assert await served_by(client, sc) == "b"  # the next matching route takes over
            data = json.loads((await cli("routes", "list", "--json", home=hermetic_env)).out)
            assert [r["enabled"] for r in data["routes"]] == [False, True]
            assert (await cli("routes", "enable", "main", home=hermetic_env)).rc == 0
            assert await served_by(client, sc) == "a"

            unknown = await cli("routes", "disable", "nope", home=hermetic_env)
            assert unknown.rc == 1 and "no route named 'nope'" in unknown.err

            # A changed file is picked up by the watcher.
            cfg = hermetic_env / "config.toml"
            cfg.write_text(base + routes_to("b"))
            await wait_for(client, sc, "b")

            # A bad file is refused; the running routes keep serving.
            cfg.write_text(base + routes_to("nobody"))
            await asyncio.sleep(1.5)
            assert await served_by(client, sc) == "b"
            assert "config reload (file changed) refused" in (hermetic_env / "child.log").read_text()

            # SIGHUP re-reads the file (here: fixed again) at once.
            cfg.write_text(base + routes_to("a"))
            os.kill(sc.proc.pid, signal.SIGHUP)
            await wait_for(client, sc, "a")
        finally:
            assert await asyncio.to_thread(sc.stop) == 0
