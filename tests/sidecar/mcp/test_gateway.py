"""/mcp with real npm MCP servers behind it, driven by the MCP SDK's client: tools listed
under the tool policy, denied tools refused at call time, calls audited and counted."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

import aiohttp
import pytest
from mcp import types

from sidecar.mcp import upstream
from sidecar.mcp.server import MCP
from sidecar.testing.harness import anthropic_config, sidecar_in_process
from sidecar.testing.postgres import free_port

from .conftest import EVERYTHING, FILESYSTEM, TOY, audit_calls, mcp_client, stdio_server

DENY = '[tools]\ndeny = ["mcp__fs__write_file", "mcp__fs__move_file", "mcp__everything__get-env"]\n'


def _text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def test_tools_filtered_refused_audited_counted(npm_servers: None, tmp_path: Path, hermetic_env: Path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    (root / "hello.txt").write_text("hello from the filesystem server\n")
    config = anthropic_config("http://127.0.0.1:9", DENY + stdio_server("everything", EVERYTHING, "stdio") + stdio_server("fs", FILESYSTEM, str(root)))
    async with sidecar_in_process(config, hermetic_env) as sc:
        await sc.app[MCP].wait_ready(30)
        async with mcp_client(sc) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"everything__echo", "everything__get-sum", "fs__read_text_file", "fs__list_directory"} <= names
            assert not {"fs__write_file", "fs__move_file", "everything__get-env"} & names  # filtered by [tools]

            echoed = await client.call_tool("everything__echo", {"message": "ping"})
            assert not echoed.isError and "ping" in _text(echoed)
            read = await client.call_tool("fs__read_text_file", {"path": str(root / "hello.txt")})
            assert not read.isError and "hello from the filesystem server" in _text(read)

            # Not listed, but a client may still name it: refused at call time, never executed.
            refused = await client.call_tool("fs__write_file", {"path": str(root / "evil.txt"), "content": "x"})
            assert refused.isError and "refused by the organization's tool policy" in _text(refused)
            assert not (root / "evil.txt").exists()

            unknown = await client.call_tool("nosuch__tool", {})
            assert unknown.isError

        entries = await audit_calls(sc)
        outcomes = [(e["server"], e["tool"], e["outcome"]) for e in entries]
        assert ("everything", "echo", "ok") in outcomes
        assert ("fs", "read_text_file", "ok") in outcomes
        assert ("fs", "write_file", "refused") in outcomes
        assert all(isinstance(e["duration_ms"], float) for e in entries)

        async with aiohttp.ClientSession() as http:
            resp = await http.get(f"{sc.url}/sidecar/v1/mcp", headers={"Authorization": f"Bearer {sc.token}"})
            report = await resp.json()
        tools = {(t["server"], t["tool"]): t for t in report["tools"]}
        assert tools[("everything", "echo")]["calls"] == 1 and tools[("everything", "echo")]["bytes"] > 0
        assert tools[("fs", "write_file")]["refused"] == 1 and tools[("fs", "write_file")]["calls"] == 0
        assert {s["name"]: s["state"] for s in report["servers"]} == {"everything": "up", "fs": "up"}


async def test_mcp_needs_the_local_token(hermetic_env: Path) -> None:
    async with sidecar_in_process(anthropic_config("http://127.0.0.1:9"), hermetic_env) as sc:
        async with aiohttp.ClientSession() as http:
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            headers = {"accept": "application/json, text/event-stream"}
            resp = await http.post(f"{sc.url}/mcp", json=body, headers=headers)
            assert resp.status == 401
            resp = await http.post(f"{sc.url}/mcp", json=body, headers={**headers, "x-sidecar-token": "wrong"})
            assert resp.status == 401


async def test_streamable_http_upstream(npm_servers: None, hermetic_env: Path) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "node", str(EVERYTHING), "streamableHttp", env={**os.environ, "PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            await asyncio.sleep(0.05)
        extra = f'[[mcp.servers]]\nname = "remote"\nurl = "http://127.0.0.1:{port}/mcp"\nheaders = {{ X-Team = "keyring:mcp-team" }}\n'
        from sidecar.secrets import SecretStore

        SecretStore(hermetic_env / "config" / "credentials.json").set("mcp-team", "platform")
        async with sidecar_in_process(anthropic_config("http://127.0.0.1:9", extra), hermetic_env) as sc:
            await sc.app[MCP].wait_ready(30)
            assert sc.app[MCP].upstreams["remote"].state == "up", sc.app[MCP].upstreams["remote"].error
            async with mcp_client(sc) as client:
                result = await client.call_tool("remote__get-sum", {"a": 2, "b": 40})
                assert not result.isError and "42" in _text(result)
    finally:
        proc.terminate()
        await proc.wait()


async def test_a_dying_server_is_restarted_and_the_sidecar_keeps_serving(hermetic_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream, "BACKOFF_FIRST", 0.05)
    config = anthropic_config("http://127.0.0.1:9", stdio_server("toy", TOY) + stdio_server("broken", Path("/nonexistent/server.js")))
    async with sidecar_in_process(config, hermetic_env) as sc:
        gateway = sc.app[MCP]
        await gateway.wait_ready(30)
        assert gateway.upstreams["broken"].state == "down"  # never started, reported, retried
        async with mcp_client(sc) as client:
            assert not (await client.call_tool("toy__add", {"a": 1, "b": 2})).isError
            died = await client.call_tool("toy__die", {})
            assert died.isError
            for _ in range(200):
                if gateway.upstreams["toy"].state == "up" and gateway.upstreams["toy"].restarts >= 1:
                    break
                await asyncio.sleep(0.05)
            toy = gateway.upstreams["toy"]
            assert toy.restarts >= 1 and toy.state == "up"
            again = await client.call_tool("toy__add", {"a": 2, "b": 3})
            assert not again.isError and "5" in _text(again)
        async with aiohttp.ClientSession() as http:
            resp = await http.get(f"{sc.url}/sidecar/v1/mcp", headers={"Authorization": f"Bearer {sc.token}"})
            states = {s["name"]: s for s in (await resp.json())["servers"]}
        assert states["broken"]["state"] == "down" and states["broken"]["error"]
        assert states["broken"]["restarts"] >= 1
        assert json.dumps(states)  # plain JSON for the CLI and the TUI


async def test_unknown_names_are_refused_and_not_counted(hermetic_env: Path) -> None:
    config = anthropic_config("http://127.0.0.1:9", stdio_server("toy", TOY))
    async with sidecar_in_process(config, hermetic_env) as sc:
        gateway = sc.app[MCP]
        await gateway.wait_ready(30)
        async with mcp_client(sc) as client:
            for name in ("toy__nosuch", "other__add", "no-separator"):
                result = await client.call_tool(name, {})
                assert result.isError and ("no tool" in _text(result) or "no MCP server" in _text(result) or "not a gateway tool" in _text(result))
        assert gateway.stats == {}
