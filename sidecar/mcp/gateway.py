"""The gateway's core: the union of upstream tools under policy, and every call checked,
audited and counted.

A tool `read_file` of the server `fs` is offered as `fs__read_file`. The tool rules
(`[tools]`, sidecar.policy.tools) see it as `mcp__fs__read_file`, the name Claude Code
would give it if the server were registered directly, so one rule covers both ways in
(`mcp__fs__*` denies the whole server). The rules are read again at every call: a tool
that was listed, bound in a script, aliased or computed is still refused once denied.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mcp import types

from sidecar.audit.log import AuditLog
from sidecar.mcp.meta_tools import meta_tools
from sidecar.mcp.settings import McpConfig
from sidecar.mcp.upstream import EventSink, Upstream, UpstreamUnavailable
from sidecar.policy.tools import ToolRules, refusal
from sidecar.tasks import TaskSet

log = logging.getLogger(__name__)

SEP = "__"


class ToolRefused(Exception):
    """The tool policy denies the tool (checked at call time)."""


class UnknownTool(Exception):
    """No connected server offers a tool of that name."""


@dataclass
class ToolStats:
    """What the calls of one tool came to."""

    calls: int = 0
    errors: int = 0  # failed calls and results flagged isError
    refused: int = 0
    bytes: int = 0  # result bytes returned (JSON)
    seconds: float = 0.0


def rule_name(server: str, tool: str) -> str:
    """The name the tool rules see: Claude Code's name for a directly registered MCP tool."""
    return f"mcp{SEP}{server}{SEP}{tool}"


def split(name: str) -> tuple[str, str]:
    """`server__tool` -> (server, tool); server names have no `_`, tool names may."""
    server, sep, tool = name.partition(SEP)
    if not sep or not server or not tool:
        raise UnknownTool(f"{name!r} is not a gateway tool name (expected <server>__<tool>)")
    return server, tool


class McpGateway:
    """Upstream servers, the policy over their tools, and the ledger of calls."""

    def __init__(
        self,
        cfg: McpConfig,
        rules: Callable[[], ToolRules],
        audit: Callable[[], AuditLog | None] = lambda: None,
        secret: Callable[[str], str | None] = lambda _n: None,
        on_event: EventSink | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.rules = rules
        self.audit = audit
        self.upstreams = {s.name: Upstream(s, secret, on_event, log_dir) for s in cfg.servers}
        self.stats: dict[tuple[str, str], ToolStats] = {}
        self._tasks = TaskSet()

    async def start(self) -> None:
        """Start every server's supervisor task (connections come up in the background)."""
        for up in self.upstreams.values():
            self._tasks.spawn(up.run(), name=f"mcp-{up.name}")

    async def wait_ready(self, seconds: float) -> None:
        """Wait until every server is up or has failed once (tests and `mcp test`)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if all(u.state != "starting" for u in self.upstreams.values()):
                return
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        """Stop every server and its connection."""
        for up in self.upstreams.values():
            up.stop()
        await self._tasks.close()

    def allowed(self, server: str, tool: str) -> bool:
        """Whether the tool policy allows the tool now."""
        return self.rules().allowed(rule_name(server, tool))

    def catalogue(self, code_mode: bool | None = None) -> list[tuple[str, types.Tool]]:
        """(server, tool) for every allowed tool of every connected server; `code_mode`
        True/False keeps only the servers that are / are not in Code Mode."""
        out: list[tuple[str, types.Tool]] = []
        for up in self.upstreams.values():
            if code_mode is not None and self.cfg.in_code_mode(up.cfg) != code_mode:
                continue
            out.extend((up.name, t) for t in up.tools if self.allowed(up.name, t.name))
        return out

    def find(self, server: str, tool: str) -> types.Tool:
        """The definition of one tool, allowed or not."""
        up = self.upstreams.get(server)
        if up is None:
            raise UnknownTool(f"no MCP server called {server!r} (servers: {', '.join(self.upstreams) or 'none'})")
        for t in up.tools:
            if t.name == tool:
                return t
        raise UnknownTool(f"the MCP server {server!r} has no tool {tool!r}")

    def find_all(self, server: str) -> list[types.Tool]:
        """Every tool the server offers (allowed or not); none for an unknown server."""
        up = self.upstreams.get(server)
        return list(up.tools) if up is not None else []

    def offered(self) -> list[types.Tool]:
        """The tools `/mcp` lists: the allowed tools of servers not in Code Mode, namespaced."""
        return [namespaced(server, t) for server, t in self.catalogue(code_mode=False)]

    @property
    def has_code_mode(self) -> bool:
        """Whether any server is reached through Code Mode."""
        return any(self.cfg.in_code_mode(u.cfg) for u in self.upstreams.values())

    async def invoke(self, name: str, arguments: dict[str, Any], via: str = "direct") -> types.CallToolResult:
        """Call `server__tool` after checking the policy now; audit and count the call.
        Raises ToolRefused, UnknownTool or UpstreamUnavailable."""
        server, tool = split(name)
        up = self.upstreams.get(server)
        if up is None:
            raise UnknownTool(f"no MCP server called {server!r}")
        if up.state == "up" and all(t.name != tool for t in up.tools):
            raise UnknownTool(f"the MCP server {server!r} has no tool {tool!r}")  # not counted: names are unbounded
        stats = self.stats.setdefault((server, tool), ToolStats())
        started = time.monotonic()
        if not self.allowed(server, tool):
            stats.refused += 1
            self._record(server, tool, via, "refused", started, 0, "denied by the tool policy")
            raise ToolRefused(refusal(name))
        outcome, size, error = "error", 0, None
        try:
            result = await up.call(tool, arguments)
            size = len(result.model_dump_json(exclude_none=True))
            outcome = "error" if result.isError else "ok"
            return result
        except Exception as e:
            error = str(e) or type(e).__name__
            raise
        finally:
            stats.calls += 1
            stats.bytes += size
            stats.seconds += time.monotonic() - started
            if outcome != "ok":
                stats.errors += 1
            self._record(server, tool, via, outcome, started, size, error)

    async def call(self, name: str, arguments: dict[str, Any], via: str = "direct") -> types.CallToolResult:
        """`invoke`, with every failure turned into an error result the model can read."""
        try:
            return await self.invoke(name, arguments, via)
        except (ToolRefused, UnknownTool, UpstreamUnavailable) as e:
            return error_result(str(e))
        except Exception as e:  # an McpError from the server, a timeout, ...
            return error_result(f"the call to {name} failed: {e or type(e).__name__}")

    def _record(self, server: str, tool: str, via: str, outcome: str, started: float, size: int, error: str | None) -> None:
        audit = self.audit()
        if audit is None:
            return
        data: dict[str, Any] = {
            "server": server,
            "tool": tool,
            "via": via,
            "outcome": outcome,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
            "bytes": size,
        }
        if error:
            data["error"] = error[:500]
        try:
            audit.append("mcp_call", data)
        except RuntimeError:  # the log closed during shutdown
            log.warning("MCP call %s__%s not audited: the audit log is closed", server, tool)

    def report(self) -> dict[str, Any]:
        """Servers and per-tool counters, for the control API and the CLI."""
        return {
            "servers": [u.status() for u in self.upstreams.values()],
            "tools": [
                {"server": s, "tool": t, **asdict(st), "seconds": round(st.seconds, 3)}
                for (s, t), st in sorted(self.stats.items())
            ],
            "code_mode": self.has_code_mode,
            "code_mode_tokens": self.code_mode_tokens() if self.has_code_mode else None,
        }

    def code_mode_tokens(self) -> dict[str, int]:
        """Tokens of the tool definitions Code Mode keeps out of every request, and of the
        meta-tools sent instead (local tokenizer, an estimate)."""
        from sidecar.providers.tokens import count_text

        def size(tools: list[types.Tool]) -> int:
            return count_text(json.dumps([t.model_dump(mode="json", exclude_none=True) for t in tools]))

        hidden = [namespaced(s, t) for s, t in self.catalogue(code_mode=True)]
        return {"tools_hidden": len(hidden), "hidden_tokens": size(hidden), "meta_tokens": size(meta_tools(self.cfg))}


def namespaced(server: str, tool: types.Tool) -> types.Tool:
    """`tool` as the gateway offers it: `server__name`."""
    return tool.model_copy(update={"name": f"{server}{SEP}{tool.name}"})


def error_result(text: str) -> types.CallToolResult:
    """A tool result that tells the model the call did not happen."""
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], isError=True)
