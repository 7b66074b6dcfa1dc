"""Code Mode: scripts that chain tool calls, the sandbox's four limits, and the call-time
policy check that no aliasing, computed name or higher-order call gets around."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import types

from sidecar.mcp.sandbox import Limits, run_script
from sidecar.mcp.server import MCP
from sidecar.testing.harness import anthropic_config, sidecar_in_process

from .conftest import TOY, audit_calls, mcp_client, stdio_server

SMALL = Limits(seconds=5.0, steps=200_000, memory_mb=200, output_bytes=4096, stack=100)


async def _echo(name: str, args: dict[str, Any]) -> Any:
    return {"tool": name, "args": args}


@pytest.mark.parametrize(
    ("code", "error"),
    [
        pytest.param("def f():\n  for i in range(1000000000):\n    pass\nf()\n", "step limit", id="infinite-loop"),
        pytest.param("def f(n):\n  return f(n + 1)\nf(0)\n", "recursion limit", id="deep-recursion"),
        pytest.param('x = "a" * 1000000000\n', "memory limit", id="memory-blow-up-at-once"),
        pytest.param("l = []\ndef f():\n  for i in range(100000000):\n    l.append(str(i) * 50)\nf()\n", "memory limit", id="memory-blow-up-growing"),
        pytest.param('def f():\n  for i in range(100000):\n    print("x" * 100)\nf()\n', "output exceeded its limit", id="huge-output"),
        pytest.param('result = "y" * 100000\n', "output exceeded its limit", id="huge-result"),
    ],
)
async def test_each_limit_stops_the_script_with_a_clear_error(code: str, error: str) -> None:
    limits = SMALL if "growing" not in code else Limits(seconds=5.0, steps=100_000_000, memory_mb=200, output_bytes=4096)
    outcome = await run_script(code, {}, _echo, limits)
    assert not outcome.ok
    assert error in (outcome.error or ""), outcome.error
    assert f"error: {outcome.error}" in outcome.text()


async def test_wall_clock_stops_a_script_stuck_in_a_tool_call() -> None:
    import asyncio

    async def slow(name: str, args: dict[str, Any]) -> Any:
        await asyncio.sleep(30)

    outcome = await run_script('call_tool("a__b", {})\n', {}, slow, Limits(seconds=0.5))
    assert not outcome.ok and "time limit" in (outcome.error or "")


async def test_a_script_sees_no_files_network_or_imports() -> None:
    for code in ('load("os", "system")\n', 'open("/etc/passwd")\n', "import os\n"):
        outcome = await run_script(code, {}, _echo, SMALL)
        assert not outcome.ok, code


CHAIN = """
s = toy.add(a=2, b=3)
p = toy.mul(a=s, b=4)
t = toy.shout(text="total " + str(p))
print("sum", s)
result = {"sum": s, "product": p, "text": t}
"""

DENIED = {
    "alias": "w = call_tool\nw('toy__wipe', {'path': '/x'})\n",
    "computed": "name = 'toy' + '__' + 'wi' + 'pe'\ncall_tool(name, {'path': '/x'})\n",
    "higher-order": "def apply(f, *a):\n  return f(*a)\nl = list(map(lambda n: apply(call_tool, n, {'path': '/x'}), ['toy__wipe']))\n",
    "struct-alias": "t = toy\nfns = [t.add, call_tool]\nfns[1]('toy__' + 'wipe', {'path': '/x'})\n",
}


def _text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def test_code_mode_through_the_gateway(hermetic_env: Path) -> None:
    config = anthropic_config(
        "http://127.0.0.1:9",
        '[tools]\ndeny = ["mcp__toy__wipe"]\n[mcp]\nscript_timeout_seconds = 10\n' + stdio_server("toy", TOY, extra="code_mode = true"),
    )
    async with sidecar_in_process(config, hermetic_env) as sc:
        await sc.app[MCP].wait_ready(30)
        async with mcp_client(sc) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert names == {"list_tools", "get_tool", "run_script"}  # the toy's tools only through scripts

            listing = _text(await client.call_tool("list_tools", {}))
            assert "toy.add(a, b)" in listing and "wipe" not in listing
            doc = _text(await client.call_tool("get_tool", {"name": "toy.mul"}))
            assert "toy.mul(a: int, b: int)" in doc and "Multiply" in doc
            assert (await client.call_tool("get_tool", {"name": "toy.wipe"})).isError

            chained = await client.call_tool("run_script", {"code": CHAIN})
            assert not chained.isError, _text(chained)
            assert '"sum": 5' in _text(chained) and '"product": 20' in _text(chained) and "TOTAL 20" in _text(chained)
            assert "sum 5" in _text(chained)

            for how, code in DENIED.items():
                refused = await client.call_tool("run_script", {"code": code})
                assert refused.isError, how
                assert "refused by the organization's tool policy" in _text(refused), (how, _text(refused))

            # A script that blows its limits ends its own worker; the gateway keeps serving.
            stuck = await client.call_tool("run_script", {"code": "def f(n):\n  return f(n + 1)\nf(0)\n"})
            assert stuck.isError and "recursion limit" in _text(stuck)
            blown = await client.call_tool("run_script", {"code": 'x = "a" * 1000000000\n'})
            assert blown.isError and "memory limit" in _text(blown)
            again = await client.call_tool("run_script", {"code": "result = toy.add(a=1, b=1)"})
            assert not again.isError and "result: 2" in _text(again)

        report = sc.app[MCP].report()
        saved = report["code_mode_tokens"]
        assert saved["tools_hidden"] == 4 and saved["hidden_tokens"] > 0 and saved["meta_tokens"] > 0

        entries = await audit_calls(sc)
        assert [e["tool"] for e in entries if e["via"] == "code_mode" and e["outcome"] == "ok"][:3] == ["add", "mul", "shout"]
        assert sum(1 for e in entries if e["tool"] == "wipe" and e["outcome"] == "refused") == len(DENIED)
