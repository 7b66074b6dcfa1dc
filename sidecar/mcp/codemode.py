"""Code Mode: three meta-tools instead of every tool of the servers in Code Mode.

- `list_tools`: one line per allowed tool, as the script calls it (`fs.read_file(path, head?)`);
- `get_tool`: one tool's typed signature, its description and its input schema;
- `run_script`: run a Starlark script that calls tools; only what it prints and its
  `result` go back to the model, never the intermediate tool results.
Each tool call of a script goes through the gateway's call-time check (McpGateway.invoke),
so a denied tool is refused however the script names it.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from mcp import types

from sidecar.mcp.gateway import SEP, McpGateway, ToolRefused, UnknownTool, error_result, split
from sidecar.mcp.meta_tools import GET, LIST
from sidecar.mcp.sandbox import Limits, run_script


def ident(name: str) -> str:
    """`name` as a Starlark identifier (a server or tool name with `-` or `.`)."""
    out = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return out if out and not out[0].isdigit() else "_" + out


def signature(server: str, tool: types.Tool, short: bool = False) -> str:
    """`server.tool(a: str, b: int = None)`, from the tool's JSON schema."""
    schema = tool.inputSchema or {}
    props: dict[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    args = []
    for name, prop in props.items():
        if short:
            args.append(name if name in required else f"{name}?")
        else:
            kind = _type(prop)
            args.append(f"{name}: {kind}" if name in required else f"{name}: {kind} = None")
    return f"{ident(server)}.{ident(tool.name)}({', '.join(args)})"


def _type(prop: Any) -> str:
    if not isinstance(prop, dict):
        return "any"
    t = prop.get("type")
    if isinstance(t, list):
        return " | ".join(str(x) for x in t)
    if t == "array":
        return f"list[{_type(prop.get('items'))}]"
    if prop.get("enum"):
        return " | ".join(json.dumps(v) for v in prop["enum"])
    return {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "object": "dict"}.get(str(t), "any")


def _first_sentence(text: str | None) -> str:
    text = (text or "").strip().split("\n")[0]
    m = re.match(r"(.{0,160}?[.!?])(\s|$)", text)
    return m.group(1) if m else text[:160]


MAX_SCRIPTS = 4  # scripts running at once (each is a process of up to script_memory_mb)


class CodeMode:
    """The meta-tools' handlers over one gateway."""

    def __init__(self, gateway: McpGateway) -> None:
        self.gateway = gateway
        self._slots = asyncio.Semaphore(MAX_SCRIPTS)
        cfg = gateway.cfg
        self.limits = Limits(
            seconds=cfg.script_timeout_seconds,
            steps=cfg.script_steps,
            memory_mb=cfg.script_memory_mb,
            output_bytes=cfg.script_output_kb * 1024,
        )

    async def call(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Answer a meta-tool call."""
        if name == LIST:
            return _text(self.list_tools(arguments.get("server")))
        if name == GET:
            try:
                return _text(self.get_tool(str(arguments.get("name", ""))))
            except UnknownTool as e:
                return error_result(str(e))
        code = arguments.get("code")
        if not isinstance(code, str) or not code.strip():
            return error_result("run_script needs `code`, a Starlark script")
        async with self._slots:  # more wait their turn (the wall clock starts when one runs)
            outcome = await run_script(code, self.bindings(), self._call, self.limits)
        result = _text(outcome.text())
        result.isError = not outcome.ok
        return result

    def list_tools(self, server: Any = None) -> str:
        """One line per allowed tool of the servers in Code Mode."""
        lines = [
            f"{signature(s, t, short=True)}  # {_first_sentence(t.description)}"
            for s, t in self.gateway.catalogue(code_mode=True)
            if server in (None, "", s)
        ]
        return "\n".join(lines) or "no tools are available"

    def get_tool(self, name: str) -> str:
        """One tool's signature, docs and schema; denied tools are not shown."""
        server, tool_name = split(name.replace(".", SEP, 1) if SEP not in name else name)
        server = next((s for s in self.gateway.upstreams if ident(s) == server), server)
        tool = next((t for t in self.gateway.find_all(server) if ident(t.name) == tool_name or t.name == tool_name), None)
        if tool is None or not self.gateway.allowed(server, tool.name):
            raise UnknownTool(f"no available tool {name!r}; list_tools shows them")
        return "\n".join(
            [
                f"{signature(server, tool)} -> any",
                f'also: call_tool("{server}{SEP}{tool.name}", {{...}})',
                "",
                (tool.description or "").strip(),
                "",
                "input schema: " + json.dumps(tool.inputSchema, separators=(",", ":")),
            ]
        )

    def bindings(self) -> dict[str, dict[str, str]]:
        """Script variable -> {field: gateway tool name}, for the allowed tools in Code Mode."""
        out: dict[str, dict[str, str]] = {}
        for server, tool in self.gateway.catalogue(code_mode=True):
            out.setdefault(ident(server), {})[ident(tool.name)] = f"{server}{SEP}{tool.name}"
        return out

    async def _call(self, name: str, arguments: dict[str, Any]) -> Any:
        """A script's tool call: the gateway checks the policy now; the value the script gets."""
        try:
            result = await self.gateway.invoke(name, arguments, via="code_mode")
        except ToolRefused as e:
            raise ToolRefused(f"refused: {e}") from None
        texts = [c.text for c in result.content if isinstance(c, types.TextContent)]
        if result.isError:
            raise RuntimeError(f"the tool {name} failed: {' '.join(texts)[:1000]}")
        structured = result.structuredContent
        if structured is not None:
            # {"result": x} is how SDK servers wrap a plain return value: the script gets x.
            return structured["result"] if list(structured) == ["result"] else structured
        if len(texts) == len(result.content):
            return "\n".join(texts)
        return [c.model_dump(mode="json", exclude_none=True) for c in result.content]


def _text(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])
