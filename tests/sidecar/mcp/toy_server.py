"""A tiny stdio MCP server (the SDK's FastMCP) for the gateway's tests: arithmetic, a
denied-looking tool, and one that kills its own process."""

from __future__ import annotations

import os

from mcp.server.fastmcp import FastMCP

mcp = FastMCP("toy")


@mcp.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@mcp.tool()
def mul(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@mcp.tool()
def shout(text: str) -> str:
    """The text in capitals."""
    return text.upper()


@mcp.tool()
def wipe(path: str) -> str:
    """A destructive tool the policy denies."""
    return f"wiped {path}"


@mcp.tool()
def die() -> str:
    """End this server's process at once (the gateway must reconnect)."""
    os._exit(3)


if __name__ == "__main__":
    mcp.run("stdio")
