"""With no MCP server configured, `/mcp` says how to add one and the SDK is never loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiohttp

from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import anthropic_config, sidecar_in_process


async def test_no_servers_answers_without_the_sdk(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with sidecar_in_process(anthropic_config(fake.url), hermetic_env) as sc:
        auth = {"x-sidecar-token": sc.token}
        async with client.get(f"{sc.url}/sidecar/v1/mcp", headers=auth) as r:
            assert r.status == 200
            assert await r.json() == {"servers": [], "tools": [], "code_mode": False, "code_mode_tokens": None}
        async with client.post(f"{sc.url}/mcp", headers=auth, json={}) as r:
            assert r.status == 404
            body = await r.json()
            assert body["type"] == "error" and "[[mcp.servers]]" in body["error"]["message"]
        async with client.post(f"{sc.url}/mcp", json={}) as r:
            assert r.status == 401  # the token rule holds whether or not a server is configured


def test_building_the_app_does_not_import_the_mcp_sdk() -> None:
    code = "import sys, sidecar.proxy.app, sidecar.proxy.server, sidecar.cli; print('mcp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
