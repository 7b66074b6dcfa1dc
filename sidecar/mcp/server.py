"""`/mcp`: the gateway as an MCP server over streamable HTTP, mounted in the sidecar's app.

The MCP SDK's own server side answers (its low-level `Server` and its
`StreamableHTTPSessionManager`, stateless, JSON responses), so the wire format is the
SDK's, not a copy of it. It is an ASGI app; `_asgi` below hands it one aiohttp request at a
time (the body is read first: MCP requests are small JSON-RPC messages). The ingress
middleware has already required the local token (x-sidecar-token or Authorization:
Bearer) and refused foreign Hosts and browser Origins, and it strips the token so the SDK
never sees it.

The session manager's task group lives in a task of its own (anyio scopes must be left by
the task that entered them), as does each upstream server's connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from sidecar import __version__
from sidecar.appkeys import BUS, CONFIG, PATHS, STAGES
from sidecar.audit.log import AuditLog
from sidecar.audit.stage import AuditStage
from sidecar.mcp.codemode import CodeMode
from sidecar.mcp.gateway import McpGateway
from sidecar.mcp.meta_tools import NAMES, meta_tools
from sidecar.policy.control import POLICY
from sidecar.policy.tools import ToolRules
from sidecar.secrets import SecretStore
from sidecar.tasks import TaskSet

log = logging.getLogger(__name__)
# The SDK logs every request at INFO ("Processing request of type ..."); the audit log and
# the counters already say what happened.
logging.getLogger("mcp.server.lowlevel.server").setLevel(logging.WARNING)

MCP = web.AppKey("mcp", McpGateway)
_MANAGER = web.AppKey("mcp_manager", StreamableHTTPSessionManager)
PATH = "/mcp"
INSTRUCTIONS = (
    "claude-sidecar's MCP gateway: the tools of the organization's MCP servers, as <server>__<tool>, "
    "under its tool policy. With Code Mode, use list_tools, get_tool and run_script."
)


def build_server(gateway: McpGateway) -> Server[Any, Any]:
    """The SDK server whose tools are the gateway's (and Code Mode's meta-tools)."""
    server: Server[Any, Any] = Server("claude-sidecar", version=__version__, instructions=INSTRUCTIONS)
    code_mode = CodeMode(gateway)

    @server.list_tools()  # type: ignore[no-untyped-call, untyped-decorator]
    async def list_tools() -> list[types.Tool]:
        tools = gateway.offered()
        if gateway.has_code_mode:
            tools.extend(meta_tools(gateway.cfg))
        return tools

    @server.call_tool(validate_input=False)  # type: ignore[untyped-decorator]
    async def call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        if name in NAMES and gateway.has_code_mode:
            return await code_mode.call(name, arguments or {})
        return await gateway.call(name, arguments or {})

    return server


def add_routes(app: web.Application) -> None:
    """Mount `/mcp` and `GET /sidecar/v1/mcp` (servers, health, counters), and own the gateway."""
    app.router.add_route("*", PATH, _handle)
    app.router.add_get("/sidecar/v1/mcp", _status)
    app.cleanup_ctx.append(_lifecycle)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Start the upstream servers and the session manager; stop them at shutdown."""
    cfg, paths = app[CONFIG], app[PATHS]
    store = SecretStore(paths.config_dir / "credentials.json")
    fallback = ToolRules(cfg.governance.tools)

    def rules() -> ToolRules:
        gate = app.get(POLICY)
        return gate.tools if gate is not None else fallback

    def audit() -> AuditLog | None:
        return next((s.audit for s in app.get(STAGES, []) if isinstance(s, AuditStage)), None)

    gateway = app[MCP] = McpGateway(cfg.mcp, rules, audit, store.get, app[BUS].publish, paths.log_dir)
    await gateway.start()
    manager = app[_MANAGER] = StreamableHTTPSessionManager(build_server(gateway), json_response=True, stateless=True)
    tasks = TaskSet()
    stop = asyncio.Event()
    started = asyncio.Event()

    async def serve() -> None:
        async with manager.run():
            started.set()
            await stop.wait()

    tasks.spawn(serve(), name="mcp-server")
    await started.wait()
    yield
    stop.set()
    await tasks.close()
    await gateway.close()


async def _status(request: web.Request) -> web.Response:
    gateway = request.app.get(MCP)
    if gateway is None:
        return web.json_response({"servers": [], "tools": [], "code_mode": False})
    return web.json_response(gateway.report())


async def _handle(request: web.Request) -> web.StreamResponse:
    """Hand one HTTP request to the SDK's ASGI app and stream its answer back."""
    manager = request.app[_MANAGER]
    body = await request.read()
    answered = asyncio.Event()
    response: web.StreamResponse | None = None
    body_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal response
        if answered.is_set():
            return  # the client has gone: the rest of the answer has nowhere to go
        try:
            if message["type"] == "http.response.start":
                response = web.StreamResponse(status=message["status"])
                for k, v in message.get("headers", []):
                    response.headers.add(k.decode("latin-1"), v.decode("latin-1"))
                await response.prepare(request)
            elif message["type"] == "http.response.body" and response is not None:
                await response.write(message.get("body", b""))
                if not message.get("more_body"):
                    await response.write_eof()
                    answered.set()
        except ConnectionResetError:
            answered.set()

    try:
        await manager.handle_request(_scope(request), receive, send)  # type: ignore[arg-type]
    finally:
        answered.set()
    if response is None:
        return web.Response(status=500, text="the MCP server gave no answer")
    return response


def _scope(request: web.Request) -> dict[str, Any]:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    host, port = (sockname[0], sockname[1]) if isinstance(sockname, tuple) else ("127.0.0.1", 0)
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.raw_path.split("?", 1)[0].encode(),
        "query_string": request.query_string.encode(),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()],
        "client": (request.remote or "127.0.0.1", 0),
        "server": (host, port),
    }
