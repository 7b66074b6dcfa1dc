"""End to end, MCP gateway: the real Claude Code CLI, registered to the sidecar's /mcp with
`claude mcp add --transport http ... --header "x-sidecar-token: ..."`, calls a tool of the
filesystem MCP server (from npm) through it, because the fake upstream scripts that
tool_use; the call is audited, and a tool the policy denies is neither offered nor run.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sqlite3
import time

import pytest

from sidecar.testing.fake_anthropic import Text, ToolUse
from sidecar.testing.harness import anthropic_config
from tests.e2e.helpers import (
    Setup,
    block_text,
    claude_bin,
    claude_result,
    posts,
    run,
    run_claude,
    sidecar_cli,
    start_sidecar,
    tool_results,
)
from tests.sidecar.mcp.conftest import FILESYSTEM

pytestmark = pytest.mark.e2e
TOOL = "mcp__sidecar__fs__read_text_file"


async def _audited_calls(s: Setup) -> list[dict[str, object]]:
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(s.db_file) as db:
            rows = [json.loads(r[0]) for r in db.execute("SELECT data FROM audit WHERE kind = 'mcp_call' ORDER BY seq")]
        if rows or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("tool_search", ["true", "false"])
async def test_claude_code_calls_a_filesystem_tool_through_the_gateway(setup: Setup, tool_search: str) -> None:
    if not FILESYSTEM.exists():
        pytest.fail("the npm MCP servers are missing: ./scripts/test installs them in .cache/npm-mcp", pytrace=False)
    s = setup
    (s.workdir / "notes.txt").write_text("the gateway served this line\n")
    servers = f'[[mcp.servers]]\nname = "fs"\ncommand = "node"\nargs = [{json.dumps(str(FILESYSTEM))}, {json.dumps(str(s.workdir))}]\n'
    policy = '[tools]\ndeny = ["mcp__fs__write_file"]\n'
    (s.sidecar_home / "config.toml").write_text(anthropic_config(s.fake.url, policy + servers))
    cc_env = await start_sidecar(s)
    assert cc_env["ENABLE_TOOL_SEARCH"] == "true"  # `env` keeps Claude Code's tool search on (Anthropic provider)
    cc_env["ENABLE_TOOL_SEARCH"] = tool_search

    for _ in range(100):  # the daemon connects to its servers in the background
        listed = await sidecar_cli(s.sidecar_env, "mcp", "list", "--json")
        if json.loads(listed.out)["servers"][0]["state"] == "up":
            break
        await asyncio.sleep(0.2)
    registered = await sidecar_cli(s.sidecar_env, "mcp", "register", "--scope", "local")
    assert registered.rc == 0, registered.describe()
    argv = shlex.split(registered.out.strip())
    assert argv[:4] == ["claude", "mcp", "add", "--transport"]
    added = await run(claude_bin(), *argv[1:], env=s.claude_env(**cc_env), cwd=s.workdir)
    assert added.rc == 0, added.describe()

    read = ToolUse(name=TOOL, input={"path": str(s.workdir / "notes.txt")})
    if tool_search == "true":  # the model must load the deferred tool before it can call it
        s.fake.script(ToolUse(name="ToolSearch", input={"query": f"select:{TOOL}", "max_results": 5}), read, Text("The gateway served it."))
    else:
        s.fake.script(read, Text("The file says the gateway served it."))
    done = await run_claude(s, cc_env, "Read notes.txt with the filesystem tool.", "--allowedTools", TOOL)
    result = claude_result(done)
    assert result["is_error"] is False, done.describe()

    bodies = [r.json() for r in posts(s.fake)]
    first, second = bodies[0], bodies[-1]
    if tool_search == "true":
        loaded = json.dumps(tool_results(bodies[1]))
        assert "tool_reference" in loaded and TOOL in loaded, loaded  # Claude Code's reply to ToolSearch, untouched
    offered = {t["name"] for t in first.get("tools", [])}
    deferred = {t["name"] for t in first.get("tools", []) if t.get("defer_loading")}
    if tool_search == "true":
        # Deferred: the tool is not in the first request at all, the model finds it with
        # ToolSearch; the tool-search beta went through the sidecar to the upstream untouched.
        assert TOOL not in json.dumps(first) and "ToolSearch" in offered, sorted(offered)
        assert "advanced-tool-use-2025-11-20" in (posts(s.fake)[0].header("anthropic-beta") or "")
    else:
        assert TOOL in offered and not deferred, sorted(offered)
    assert "mcp__sidecar__fs__write_file" not in json.dumps(first)  # denied: never offered
    results = tool_results(second)
    assert results and "the gateway served this line" in block_text(results[-1]["content"]), results

    calls = await _audited_calls(s)
    assert [(c["server"], c["tool"], c["outcome"]) for c in calls] == [("fs", "read_text_file", "ok")]
