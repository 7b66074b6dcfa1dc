"""`/mcp` and its report while no MCP server is configured: answered without loading the MCP
SDK, which costs about half a second and 25 MB at start (sidecar.mcp.server loads it)."""

from __future__ import annotations

from aiohttp import web

from sidecar.errors import NotFound

PATH = "/mcp"
EMPTY_REPORT = {"servers": [], "tools": [], "code_mode": False, "code_mode_tokens": None}


async def _status(request: web.Request) -> web.Response:
    return web.json_response(EMPTY_REPORT)


async def _endpoint(request: web.Request) -> web.Response:
    raise NotFound("no MCP servers are configured: add [[mcp.servers]] to the config (docs/mcp.md) and restart")


def add_routes(app: web.Application) -> None:
    """Mount the idle `/mcp` and `GET /sidecar/v1/mcp`."""
    app.router.add_route("*", PATH, _endpoint)
    app.router.add_get("/sidecar/v1/mcp", _status)
