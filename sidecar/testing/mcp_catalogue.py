"""A generated stdio MCP server with N realistic tools (benchmarks and tests).

    python -m sidecar.testing.mcp_catalogue --name crm --tools 25

Each tool has a one- or two-sentence description and 2-6 typed parameters, like the tools
of a business API server; a call answers with its name and arguments as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Any

import anyio
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

VERBS = ["get", "list", "create", "update", "delete", "search", "archive", "assign", "export", "count"]
NOUNS = ["customer", "invoice", "ticket", "order", "contact", "deal", "project", "payment", "shipment", "report", "user", "team"]
PARAMS: list[tuple[str, dict[str, Any]]] = [
    ("id", {"type": "string", "description": "The record's unique identifier."}),
    ("query", {"type": "string", "description": "Free-text search over names, emails and notes."}),
    ("limit", {"type": "integer", "description": "Maximum number of records to return (1-500).", "minimum": 1, "maximum": 500}),
    ("cursor", {"type": "string", "description": "Pagination cursor returned by a previous call."}),
    ("status", {"type": "string", "enum": ["open", "pending", "closed", "archived"], "description": "Filter by lifecycle status."}),
    ("owner_email", {"type": "string", "description": "Email address of the owning user."}),
    ("created_after", {"type": "string", "description": "ISO 8601 timestamp; only records created after it."}),
    ("tags", {"type": "array", "items": {"type": "string"}, "description": "Labels to attach or filter by."}),
    ("fields", {"type": "object", "description": "Field values to set, keyed by field name."}),
    ("include_deleted", {"type": "boolean", "description": "Also return soft-deleted records."}),
]


def tools(server: str, count: int, seed: int = 7) -> list[types.Tool]:
    """`count` deterministic tool definitions for the server `server`."""
    rng = random.Random(f"{server}:{seed}")
    out = []
    for i in range(count):
        verb, noun = VERBS[i % len(VERBS)], NOUNS[(i // len(VERBS) + rng.randrange(len(NOUNS))) % len(NOUNS)]
        params = rng.sample(PARAMS, rng.randint(2, 6))
        required = [params[0][0]]
        desc = f"{verb.capitalize()} {noun} records in the {server} system."
        if rng.random() < 0.6:
            desc += f" Returns the matching {noun}s with their metadata; respects the caller's permissions."
        out.append(
            types.Tool(
                name=f"{verb}_{noun}_{i}",
                description=desc,
                inputSchema={"type": "object", "properties": dict(params), "required": required},
            )
        )
    return out


def main() -> None:
    """Serve the generated tools over stdio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="gen")
    parser.add_argument("--tools", type=int, default=25)
    args = parser.parse_args()
    catalogue = tools(args.name, args.tools)
    server: Server[Any, Any] = Server(args.name)

    @server.list_tools()  # type: ignore[no-untyped-call, untyped-decorator]
    async def list_tools() -> list[types.Tool]:
        return catalogue

    @server.call_tool(validate_input=False)  # type: ignore[untyped-decorator]
    async def call_tool(name: str, arguments: dict[str, Any]) -> list[types.TextContent]:
        return [types.TextContent(type="text", text=json.dumps({"tool": name, "args": arguments}))]

    async def run() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(run)


if __name__ == "__main__":
    main()
