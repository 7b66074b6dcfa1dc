"""What MCP tool definitions cost Claude Code per request: plain MCP, its tool search, Code Mode.

A catalogue of real and generated MCP servers (the npm `server-everything` and
`server-filesystem`, plus generated business-API servers from sidecar.testing.mcp_catalogue)
sits behind the sidecar's /mcp. The real Claude Code CLI is registered to it with
`claude mcp add` and asked one question; its first request body (as the fake Anthropic
upstream received it through the sidecar) is counted with the local tokenizer
(sidecar.providers.tokens, cl100k_base: an estimate, the same for every mode):

- plain: `ENABLE_TOOL_SEARCH=false`, every tool definition in every request;
- default: `ENABLE_TOOL_SEARCH` unset (what Claude Code does on its own behind a custom base URL);
- tool search: `ENABLE_TOOL_SEARCH=true`, MCP tools sent with `defer_loading` (the API keeps
  them out of the context; the tokens that reach the model are the non-deferred part);
- code mode: `[mcp] code_mode = true`, three meta-tools instead of the catalogue (with
  tool search off, then on).

It then times the Code Mode sandbox: a worker's start-up (a script with no tool call) and
the added cost of one tool call made from a script versus the same call made directly.

    python bench/mcp_tokens.py               # ~1 minute
    python bench/mcp_tokens.py --generated 4 --per-server 25 --json

Needs ./scripts/test's installs (.cache/npm for Claude Code, .cache/npm-mcp for the servers).
All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sidecar.mcp.sandbox import Limits, run_script  # noqa: E402
from sidecar.mcp.server import MCP  # noqa: E402
from sidecar.providers.tokens import count_request, count_text  # noqa: E402
from sidecar.testing.fake_anthropic import FakeAnthropic, Text  # noqa: E402
from sidecar.testing.harness import anthropic_config, sidecar_in_process  # noqa: E402

CLAUDE = Path(os.environ.get("CLAUDE_SIDECAR_CLAUDE_BIN") or REPO / ".cache/npm/node_modules/.bin/claude")
NPM = REPO / ".cache/npm-mcp/node_modules/@modelcontextprotocol"


def servers_toml(root: Path, generated: int, per_server: int, code_mode: bool) -> str:
    """[[mcp.servers]] for the npm servers and `generated` catalogue servers."""
    py = json.dumps(sys.executable)
    out = [f"[mcp]\ncode_mode = {'true' if code_mode else 'false'}\n"]
    out.append(f'[[mcp.servers]]\nname = "everything"\ncommand = "node"\nargs = [{json.dumps(str(NPM / "server-everything/dist/index.js"))}, "stdio"]\n')
    out.append(f'[[mcp.servers]]\nname = "fs"\ncommand = "node"\nargs = [{json.dumps(str(NPM / "server-filesystem/dist/index.js"))}, {json.dumps(str(root))}]\n')
    for i in range(generated):
        name = ["crm", "billing", "support", "hr", "ops", "sales", "infra", "legal"][i % 8] + (str(i // 8) if i >= 8 else "")
        out.append(f'[[mcp.servers]]\nname = "{name}"\ncommand = {py}\nargs = ["-m", "sidecar.testing.mcp_catalogue", "--name", "{name}", "--tools", "{per_server}"]\ncwd = {json.dumps(str(REPO))}\n')
    return "\n".join(out)


async def _run(*argv: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*argv, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


async def measure_mode(mode: str, generated: int, per_server: int, tmp: Path) -> dict[str, Any]:
    """Claude Code's first request body in `mode`, counted."""
    root = tmp / mode
    (root / "project").mkdir(parents=True)
    (root / "home").mkdir()
    async with FakeAnthropic() as fake:
        fake.script(Text("ok"))
        config = anthropic_config(fake.url, servers_toml(root / "project", generated, per_server, mode.startswith("code_mode")))
        async with sidecar_in_process(config, root / "sidecar") as sc:
            gateway = sc.app[MCP]
            await gateway.wait_ready(120)
            catalogue = sum(len(u.tools) for u in gateway.upstreams.values())
            env = {
                "PATH": os.environ.get("PATH", os.defpath), "HOME": str(root / "home"),
                "ANTHROPIC_BASE_URL": sc.url, "ANTHROPIC_API_KEY": "sk-ant-test",
                "ANTHROPIC_CUSTOM_HEADERS": f"x-sidecar-token: {sc.token}",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1",
            }  # fmt: skip
            if mode != "default":  # default: what Claude Code does behind a custom base URL when not told
                env["ENABLE_TOOL_SEARCH"] = "true" if mode.endswith("tool_search") else "false"
            cwd = root / "project"
            rc, out, err = await _run(str(CLAUDE), "mcp", "add", "--transport", "http", "--scope", "local", "sidecar",
                                      f"{sc.url}/mcp", "--header", f"x-sidecar-token: {sc.token}", env=env, cwd=cwd)  # fmt: skip
            if rc:
                raise SystemExit(f"claude mcp add failed: {out}{err}")
            rc, out, err = await _run(str(CLAUDE), "-p", "Say ok.", "--output-format", "json", env=env, cwd=cwd)
            if rc:
                raise SystemExit(f"claude -p failed in {mode}: {out}{err}")
    first = next(r for r in fake.requests if r.method == "POST" and r.path == "/v1/messages")
    body = first.json()
    tools = body.get("tools") or []
    mcp_tools = [t for t in tools if str(t.get("name", "")).startswith("mcp__")]
    deferred = [t for t in tools if t.get("defer_loading")]
    in_context = {**body, "tools": [t for t in tools if not t.get("defer_loading")]}
    return {
        "mode": mode,
        "catalogue_tools": catalogue,
        "tools_in_body": len(tools),
        "mcp_tools_in_body": len(mcp_tools),
        "deferred_tools": len(deferred),
        "body_tokens": count_request(body),
        "context_tokens": count_request(in_context),
        "mcp_definition_tokens": count_text(json.dumps([t for t in mcp_tools if not t.get("defer_loading")])),
        "anthropic_beta": first.header("anthropic-beta") or "",
    }


async def sandbox_overhead(rounds: int) -> dict[str, float]:
    """Worker start-up, and the cost of a tool call from a script over a direct one."""

    async def echo(name: str, args: dict[str, Any]) -> Any:
        return {"ok": True}

    limits = Limits()
    starts = []
    for _ in range(rounds):
        t = time.perf_counter()
        r = await run_script("result = 1", {}, echo, limits)
        assert r.ok, r.error
        starts.append(time.perf_counter() - t)
    calls = 50
    with_calls = []
    for _ in range(rounds):
        t = time.perf_counter()
        r = await run_script(f'def f():\n  for i in range({calls}):\n    call_tool("a__b", {{"i": i}})\nf()\n', {}, echo, limits)
        assert r.ok, r.error
        with_calls.append(time.perf_counter() - t)
    start = statistics.median(starts)
    return {
        "worker_start_ms": round(start * 1000, 1),
        "per_call_ms": round((statistics.median(with_calls) - start) / calls * 1000, 3),
    }


async def main() -> None:
    """Measure every mode and the sandbox; print a table (or JSON)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generated", type=int, default=4, help="generated servers besides the npm ones")
    ap.add_argument("--per-server", type=int, default=25, help="tools per generated server")
    ap.add_argument("--rounds", type=int, default=7, help="sandbox timing rounds")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mcp-bench-") as tmp:
        os.environ["CLAUDE_SIDECAR_HOME"] = str(Path(tmp) / "unused")
        rows = [await measure_mode(m, args.generated, args.per_server, Path(tmp)) for m in ("plain", "default", "tool_search", "code_mode", "code_mode+tool_search")]
    sandbox = await sandbox_overhead(args.rounds)
    plain = rows[0]["context_tokens"]
    for row in rows:
        row["reduction_vs_plain"] = round(1 - row["context_tokens"] / plain, 3) if plain else 0.0
    if args.json:
        print(json.dumps({"modes": rows, "sandbox": sandbox}, indent=2))
        return
    print(f"catalogue: {rows[0]['catalogue_tools']} MCP tools across {2 + args.generated} servers")
    print(f"{'mode':<22} {'tools':>6} {'deferred':>8} {'body tok':>9} {'context tok':>11} {'MCP defs tok':>12} {'vs plain':>9}")
    for r in rows:
        print(f"{r['mode']:<22} {r['tools_in_body']:>6} {r['deferred_tools']:>8} {r['body_tokens']:>9} {r['context_tokens']:>11} {r['mcp_definition_tokens']:>12} {-r['reduction_vs_plain']:>+9.1%}")
    for r in rows:
        print(f"  {r['mode']}: anthropic-beta = {r['anthropic_beta'] or '(none)'}")
    print(f"sandbox: worker start-up {sandbox['worker_start_ms']} ms (median), +{sandbox['per_call_ms']} ms per tool call from a script")


if __name__ == "__main__":
    asyncio.run(main())
