"""`claude-sidecar mcp [list|test|add|register]`: the MCP gateway's upstream servers.

`list` asks the running daemon (health, calls, errors, bytes per tool) and falls back to
the config; `test` connects to each configured server from this process and lists its
tools; `add` appends a `[[mcp.servers]]` table to the config (checked before it is
written); `register` prints the `claude mcp add` command that points Claude Code at `/mcp`.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import urllib.error
from collections.abc import Mapping
from typing import Any

import click

from sidecar.cli.common import context, find_daemon
from sidecar.config import parse
from sidecar.errors import ConfigError, SidecarError
from sidecar.paths import locked, replace_file

TOKEN_HEADER = "x-sidecar-token"


@click.group("mcp")
def mcp() -> None:
    """The MCP gateway: upstream MCP servers served to Claude Code at /mcp."""


@mcp.command("list")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file to use.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def list_(config_path: str | None, as_json: bool) -> None:
    """Servers, their health and the calls made through the gateway."""
    cfg, p = context(config_path)
    d = find_daemon(p)
    report: dict[str, Any]
    if d is not None:
        try:
            report = d.call("GET", "/sidecar/v1/mcp")
        except (urllib.error.URLError, OSError) as e:
            raise SidecarError(f"cannot reach the sidecar at {d.url}: {e}") from None
    else:
        report = {
            "servers": [
                {"name": s.name, "transport": s.transport, "target": s.url or shlex.join([s.command or "", *s.args]), "state": "not running", "tools": None, "code_mode": cfg.mcp.in_code_mode(s)}
                for s in cfg.mcp.servers
            ],
            "tools": [],
        }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    if not report["servers"]:
        click.echo("no MCP servers configured; add one with: claude-sidecar mcp add NAME -- COMMAND ARGS...")
        return
    for s in report["servers"]:
        tools = "" if s.get("tools") is None else f", {s['tools']} tools"
        extra = f", restarts {s['restarts']}" if s.get("restarts") else ""
        mode = ", code mode" if s.get("code_mode") else ""
        click.echo(f"{s['name']:<16} {s['state']:<12} {s['transport']} {s['target']}{tools}{extra}{mode}")
        if s.get("error"):
            click.echo(f"{'':<16} last error: {s['error']}")
    if report["tools"]:
        click.echo("")
        click.echo(f"{'tool':<40} {'calls':>6} {'errors':>6} {'refused':>7} {'bytes':>10}")
        for t in report["tools"]:
            click.echo(f"{t['server'] + '__' + t['tool']:<40} {t['calls']:>6} {t['errors']:>6} {t['refused']:>7} {t['bytes']:>10}")


@mcp.command("test")
@click.argument("names", nargs=-1)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file to use.")
@click.option("--timeout", "seconds", type=float, default=60.0, show_default=True, help="Seconds to wait for each server.")
def test(names: tuple[str, ...], config_path: str | None, seconds: float) -> None:
    """Connect to the configured servers (or NAMES) from here and list their tools."""
    cfg, p = context(config_path)
    servers = [s for s in cfg.mcp.servers if not names or s.name in names]
    unknown = set(names) - {s.name for s in servers}
    if unknown:
        raise SidecarError(f"no MCP server called {', '.join(sorted(unknown))} in the config")
    if not servers:
        raise SidecarError("no MCP servers configured")
    failed = asyncio.run(_test(cfg, p, servers, seconds))
    if failed:
        raise SidecarError(f"{failed} of {len(servers)} MCP servers did not come up")


async def _test(cfg: Any, p: Any, servers: list[Any], seconds: float) -> int:
    from dataclasses import replace

    from sidecar.mcp.gateway import McpGateway
    from sidecar.policy.tools import ToolRules
    from sidecar.secrets import SecretStore

    store = SecretStore(p.config_dir / "credentials.json")
    rules = ToolRules(cfg.governance.tools)
    gateway = McpGateway(replace(cfg.mcp, servers=tuple(servers)), lambda: rules, secret=store.get, log_dir=p.log_dir)
    await gateway.start()
    try:
        await gateway.wait_ready(seconds)
        failed = 0
        for up in gateway.upstreams.values():
            if up.state != "up":
                failed += 1
                click.echo(f"{up.name}: {up.state}: {up.error or 'no answer in time'}")
                continue
            allowed = [t.name for t in up.tools if gateway.allowed(up.name, t.name)]
            denied = len(up.tools) - len(allowed)
            click.echo(f"{up.name}: up ({up.server_info}), {len(up.tools)} tools" + (f", {denied} denied by [tools]" if denied else ""))
            for name in allowed:
                click.echo(f"  {up.name}__{name}")
        return failed
    finally:
        await gateway.close()


@mcp.command("add")
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--url", help="A streamable-HTTP server's URL (instead of COMMAND).")
@click.option("--header", "headers", multiple=True, help="NAME=VALUE (VALUE may be keyring:CREDENTIAL); repeatable.")
@click.option("--env", "envs", multiple=True, help="NAME=VALUE for a stdio server (VALUE may be keyring:CREDENTIAL).")
@click.option("--code-mode", is_flag=True, help="Reach this server's tools through Code Mode only.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file to change.")
def add(name: str, command: tuple[str, ...], url: str | None, headers: tuple[str, ...], envs: tuple[str, ...], code_mode: bool, config_path: str | None) -> None:
    """Add an upstream server: `mcp add fs -- npx -y @modelcontextprotocol/server-filesystem ~/src`
    or `mcp add remote --url https://host/mcp --header Authorization=keyring:remote`."""
    _, p = context(config_path)
    table = [f"\n[[mcp.servers]]\nname = {json.dumps(name)}"]
    if url:
        table.append(f"url = {json.dumps(url)}")
    if command:
        table.append(f"command = {json.dumps(command[0])}")
        table.append(f"args = {json.dumps(list(command[1:]))}")
    for key, pairs in (("headers", headers), ("env", envs)):
        if pairs:
            items = [_pair(x) for x in pairs]
            table.append(f"{key} = {{ " + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in items) + " }")
    if code_mode:
        table.append("code_mode = true")
    path = p.config_file
    with locked(path.with_name(".config.lock")):  # another `mcp add` keeps its server too
        old = path.read_text() if path.exists() else ""
        new = old.rstrip("\n") + "\n" + "\n".join(table) + "\n"
        try:
            parse(new, path, {})
        except ConfigError as e:
            raise SidecarError(f"not added: {e.message}") from None
        replace_file(path, new, mode=None)  # the running daemon watches it: never half-written
    click.echo(f"added MCP server {name!r} to {path}; restart the sidecar to connect it (claude-sidecar stop && claude-sidecar start)")


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SidecarError(f"{text!r} is not NAME=VALUE")
    return key.strip(), value


@mcp.command("register")
@click.option("--name", default="sidecar", show_default=True, help="The server name Claude Code shows.")
@click.option("--scope", type=click.Choice(["local", "user", "project"]), default="user", show_default=True)
def register(name: str, scope: str) -> None:
    """Print the `claude mcp add` command that registers the gateway with Claude Code."""
    _, p = context()
    d = find_daemon(p)
    if d is None:
        raise SidecarError("claude-sidecar is not running; start it with: claude-sidecar start")
    click.echo(claude_mcp_add(d.url, d.token, name, scope))


def claude_mcp_add(url: str, token: str, name: str = "sidecar", scope: str = "user") -> str:
    """`claude mcp add --transport http NAME URL/mcp --header "x-sidecar-token: TOKEN"`."""
    return shlex.join(["claude", "mcp", "add", "--transport", "http", "--scope", scope, name, f"{url}/mcp", "--header", f"{TOKEN_HEADER}: {token}"])


def tool_search_env(status: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """ENABLE_TOOL_SEARCH=true for Claude Code when every provider speaks Anthropic.

    Behind a custom ANTHROPIC_BASE_URL Claude Code turns its MCP tool search off unless
    told (measured with 2.1.197: the same 151 tool definitions with the variable unset as
    with `false`; with `true` it sends the `advanced-tool-use-2025-11-20` beta and defers
    the MCP tools, bench/mcp_tokens.py). The sidecar passes those bytes through untouched
    to Anthropic-type providers; a translated provider (OpenAI, Gemini, ...) has no tool
    search, so there it stays off. A value the user set is kept."""
    providers = status.get("providers") or []
    if "ENABLE_TOOL_SEARCH" in environ or not providers:
        return {}
    if all(p.get("type") == "anthropic" for p in providers):
        return {"ENABLE_TOOL_SEARCH": "true"}
    return {}


COMMANDS = [mcp]
