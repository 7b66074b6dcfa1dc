"""The `[mcp]` config section: upstream MCP servers behind the gateway, and Code Mode limits.

    [mcp]
    code_mode = false            # true: every server is reached through Code Mode's meta-tools
    script_timeout_seconds = 10  # wall clock of one Code Mode script (tool calls included)
    script_steps = 2000000       # interpreter steps (loop iterations and calls) of one script
    script_memory_mb = 256       # address-space limit of the script's worker process
    script_output_kb = 64        # printed output and result of one script

    [[mcp.servers]]
    name = "fs"                  # tools are offered as fs__<tool>; rules see mcp__fs__<tool>
    command = "npx"              # a stdio server ...
    args = ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]
    env = { TOKEN = "keyring:fs-token" }
    code_mode = true             # this server through Code Mode only

    [[mcp.servers]]
    name = "remote"
    url = "https://mcp.example.com/mcp"   # ... or a streamable-HTTP server
    headers = { Authorization = "keyring:remote-mcp" }

A value `keyring:NAME` in `env` or `headers` is read from the credential store
(`claude-sidecar keys set NAME` stores one), so no secret has to sit in the config file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sidecar.configread import Reader

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")  # no "_": `server__tool` must split unambiguously
KEYRING_PREFIX = "keyring:"


@dataclass(frozen=True)
class McpServerConfig:
    """One upstream MCP server: a command (stdio) or a URL (streamable HTTP)."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    code_mode: bool = False
    timeout_seconds: float = 30.0  # one tool call

    @property
    def transport(self) -> str:
        """`stdio` or `http`."""
        return "stdio" if self.command else "http"


@dataclass(frozen=True)
class McpConfig:
    """The MCP gateway: its upstream servers and the Code Mode sandbox's limits."""

    servers: tuple[McpServerConfig, ...] = ()
    code_mode: bool = False
    script_timeout_seconds: float = 10.0
    script_steps: int = 2_000_000
    script_memory_mb: int = 256
    script_output_kb: int = 64

    def server(self, name: str) -> McpServerConfig:
        """The server called `name`."""
        for s in self.servers:
            if s.name == name:
                return s
        raise KeyError(name)

    def in_code_mode(self, server: McpServerConfig) -> bool:
        """Whether `server`'s tools are reached through Code Mode only."""
        return self.code_mode or server.code_mode


def read_mcp(r: Reader, data: Any) -> McpConfig:
    """Validate `[mcp]` with the config reader `r` (errors name the key and line)."""
    d = r.table(data, "mcp", {"servers", "code_mode", "script_timeout_seconds", "script_steps", "script_memory_mb", "script_output_kb"})
    c = McpConfig()
    limits: dict[str, Any] = {}
    for name, kind in (("script_timeout_seconds", (int, float)), ("script_steps", int), ("script_memory_mb", int), ("script_output_kb", int)):
        v = r.get(d, "mcp", name, kind, getattr(c, name))
        if v <= 0:
            raise r.fail(f"mcp.{name}", "must be a positive number")
        limits[name] = v
    servers = r.get(d, "mcp", "servers", list, [])
    out: list[McpServerConfig] = []
    for i, raw in enumerate(servers):
        out.append(_server(r, raw, f"mcp.servers[{i}]"))
    names = [s.name for s in out]
    for n in names:
        if names.count(n) > 1:
            raise r.fail("mcp.servers", f"two servers are called {n!r}")
    return McpConfig(
        servers=tuple(out),
        code_mode=r.get(d, "mcp", "code_mode", bool, False),
        script_timeout_seconds=float(limits["script_timeout_seconds"]),
        script_steps=limits["script_steps"],
        script_memory_mb=limits["script_memory_mb"],
        script_output_kb=limits["script_output_kb"],
    )


def _server(r: Reader, data: Any, key: str) -> McpServerConfig:
    d = r.table(data, key, {"name", "command", "args", "env", "cwd", "url", "headers", "code_mode", "timeout_seconds"})
    name = r.get(d, key, "name", str, None)
    if name is None or not _NAME.fullmatch(name):
        raise r.fail(f"{key}.name", f"{name!r} must be 1-31 of a-z, 0-9 and '-' (no '_': tools are named <server>__<tool>)")
    command = r.get(d, key, "command", str, None)
    url = r.get(d, key, "url", str, None)
    if (command is None) == (url is None):
        raise r.fail(key, "needs exactly one of `command` (a stdio server) or `url` (a streamable-HTTP server)")
    if url is not None and not url.startswith(("http://", "https://")):
        raise r.fail(f"{key}.url", f"{url!r} must be an http(s) URL")
    args = r.get(d, key, "args", list, [])
    if not all(isinstance(a, str) for a in args):
        raise r.fail(f"{key}.args", "must be a list of strings")
    timeout = r.get(d, key, "timeout_seconds", (int, float), 30.0)
    if timeout <= 0:
        raise r.fail(f"{key}.timeout_seconds", "must be a positive number")
    return McpServerConfig(
        name=name,
        command=command,
        args=tuple(args),
        env=_strings(r, d, key, "env"),
        cwd=r.get(d, key, "cwd", str, None),
        url=url,
        headers=_strings(r, d, key, "headers"),
        code_mode=r.get(d, key, "code_mode", bool, False),
        timeout_seconds=float(timeout),
    )


def _strings(r: Reader, d: dict[str, Any], key: str, name: str) -> dict[str, str]:
    table = r.get(d, key, name, dict, {})
    for k, v in table.items():
        if not isinstance(v, str):
            raise r.fail(f"{key}.{name}.{k}", "must be a string")
    return dict(table)


def resolve_secrets(values: dict[str, str], lookup: Any) -> dict[str, str]:
    """`values` with each `keyring:NAME` replaced by the stored credential `lookup(NAME)`;
    a missing one raises KeyError naming it."""
    out = {}
    for k, v in values.items():
        if v.startswith(KEYRING_PREFIX):
            name = v[len(KEYRING_PREFIX) :]
            secret = lookup(name)
            if secret is None:
                raise KeyError(f"no stored credential {name!r} (for {k}); store it with `claude-sidecar keys set {name}`")
            v = secret
        out[k] = v
    return out
