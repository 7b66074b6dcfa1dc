"""Code Mode's three meta-tools, as the model sees them (sidecar.mcp.codemode runs them).

- `list_tools`: one line per allowed tool, as the script calls it;
- `get_tool`: one tool's typed signature, its description and its input schema;
- `run_script`: a Starlark script that calls tools.
"""

from __future__ import annotations

from mcp import types

from sidecar.mcp.settings import McpConfig

LIST, GET, RUN = "list_tools", "get_tool", "run_script"
NAMES = frozenset({LIST, GET, RUN})

_RUN_DOC = """Run a Starlark script (a small, deterministic Python dialect: def, lambda, for, if, \
list/dict comprehensions; no while, no try, no imports, no files or network) that calls MCP tools \
and returns only what you need. Each server is a variable whose fields are its tools, called with \
keyword arguments: `r = fs.read_text_file(path="/a.txt")`; or by name: \
`call_tool("fs__read_text_file", {{"path": "/a.txt"}})`. A call returns the tool's structured result, \
or its text. `print(...)` output and the variable `result` (or the last expression) come back. \
A refused or failed call stops the script with the reason. Limits: {seconds:g} s, {steps} steps, \
{memory} MB, {output} bytes of output. Use list_tools and get_tool first to see what exists."""


def meta_tools(cfg: McpConfig) -> list[types.Tool]:
    """The three meta-tools, with the sandbox's limits in the run_script description."""
    doc = _RUN_DOC.format(
        seconds=cfg.script_timeout_seconds, steps=cfg.script_steps, memory=cfg.script_memory_mb, output=cfg.script_output_kb * 1024
    )
    return [
        types.Tool(
            name=LIST,
            description="List the MCP tools available to run_script scripts, one line each, as a script calls them.",
            inputSchema={"type": "object", "properties": {"server": {"type": "string", "description": "only this server"}}},
        ),
        types.Tool(
            name=GET,
            description="Show one tool's signature, documentation and input schema (name as `server.tool` or `server__tool`).",
            inputSchema={"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        ),
        types.Tool(
            name=RUN,
            description=doc,
            inputSchema={"type": "object", "properties": {"code": {"type": "string", "description": "the Starlark script"}}, "required": ["code"]},
        ),
    ]
