"""One upstream MCP server: connect (stdio or streamable HTTP), list its tools, keep it alive.

Each server runs in one owned task (the SDK's transports are anyio contexts that must be
entered and left by the same task). The task connects, initialises, lists the tools and then
watches the connection with pings; when the server dies, a ping fails or a call finds the
connection closed, it reconnects with exponential backoff and reports the failure through
`on_event`. Nothing a server does ends the task: the sidecar goes on serving the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

from sidecar.mcp.settings import McpServerConfig, resolve_secrets

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5  # seconds before the first reconnect; doubled after each failure
BACKOFF_MAX = 30.0
HEALTH_INTERVAL = 10.0  # seconds between pings of a quiet server
PING_TIMEOUT = 5.0
CONNECT_TIMEOUT = 60.0  # start + initialize + list tools (npx may install a package first)
WAIT_READY = 10.0  # how long a call waits for a server that is (re)connecting

EventSink = Callable[[str, dict[str, Any]], None]


class UpstreamUnavailable(Exception):
    """The server is not connected (starting, or down and waiting to reconnect)."""


class Upstream:
    """A supervised connection to one MCP server."""

    def __init__(
        self,
        cfg: McpServerConfig,
        secret: Callable[[str], str | None] = lambda _n: None,
        on_event: EventSink | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.secret = secret
        self.on_event = on_event
        self.log_dir = log_dir
        self.state = "starting"  # starting | up | down | stopped
        self.error: str | None = None
        self.restarts = 0  # reconnects after a failure
        self.connected_at: float | None = None
        self.tools: list[types.Tool] = []
        self.server_info: str = ""
        self._session: ClientSession | None = None
        self._ready = asyncio.Event()
        self._broken = asyncio.Event()
        self._stop = asyncio.Event()

    def status(self) -> dict[str, Any]:
        """What the control API and `mcp list` show."""
        return {
            "name": self.name,
            "transport": self.cfg.transport,
            "target": self.cfg.url or " ".join([self.cfg.command or "", *self.cfg.args]).strip(),
            "state": self.state,
            "error": self.error,
            "restarts": self.restarts,
            "tools": len(self.tools),
            "server": self.server_info,
            "code_mode": self.cfg.code_mode,
        }

    async def run(self) -> None:
        """Connect, serve, reconnect with backoff; until `stop()`."""
        delay = BACKOFF_FIRST
        while not self._stop.is_set():
            try:
                async with self._connect() as session:
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        init = await session.initialize()
                        self.tools = await _all_tools(session)
                    self.server_info = f"{init.serverInfo.name} {init.serverInfo.version}"
                    self._session, self.state, self.error = session, "up", None
                    self.connected_at = time.time()
                    self._broken.clear()
                    self._ready.set()
                    delay = BACKOFF_FIRST
                    self._emit("mcp_server_up", {"tools": len(self.tools)})
                    log.info("MCP server %s is up (%s, %d tools)", self.name, self.server_info, len(self.tools))
                    await self._watch(session)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a dying server must never take the sidecar down
                self.error = _describe(e)
            finally:
                self._session = None
                self._ready.clear()
            if self._stop.is_set():
                break
            self.state = "down"
            self.restarts += 1
            self._emit("mcp_server_down", {"error": self.error, "retry_in": delay})
            log.warning("MCP server %s is down (%s); reconnecting in %.1fs", self.name, self.error, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, BACKOFF_MAX)
        self.state = "stopped"

    def stop(self) -> None:
        """Ask `run()` to close the connection and return."""
        self._stop.set()

    async def _watch(self, session: ClientSession) -> None:
        """Return when stopped; raise when the connection is found broken."""
        while not self._stop.is_set():
            stop = asyncio.ensure_future(self._stop.wait())
            broken = asyncio.ensure_future(self._broken.wait())
            try:
                await asyncio.wait({stop, broken}, timeout=HEALTH_INTERVAL, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                broken.cancel()
            if self._stop.is_set():
                return
            if self._broken.is_set():
                raise ConnectionError(self.error or "the connection was lost")
            await session.send_ping()

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[ClientSession]:
        cfg = self.cfg
        if cfg.command:
            env = await asyncio.to_thread(resolve_secrets, cfg.env, self.secret)  # the keyring may block
            params = StdioServerParameters(command=cfg.command, args=list(cfg.args), env=_with_base_env(env), cwd=cfg.cwd)
            with self._errlog() as errlog:
                async with stdio_client(params, errlog=errlog) as (read, write):
                    async with ClientSession(read, write) as session:
                        yield session
        else:
            assert cfg.url is not None
            headers = await asyncio.to_thread(resolve_secrets, cfg.headers, self.secret)
            timeout = httpx.Timeout(30.0, read=max(300.0, cfg.timeout_seconds))
            async with httpx.AsyncClient(headers=headers, timeout=timeout, trust_env=False) as client:
                async with streamable_http_client(cfg.url, http_client=client) as (read, write, _sid):
                    async with ClientSession(read, write) as session:
                        yield session

    @contextlib.contextmanager
    def _errlog(self) -> Any:
        """Where a stdio server's stderr goes: a log file of its own (or nowhere)."""
        if self.log_dir is None:
            with open(os.devnull, "w") as f:
                yield f
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"mcp-{self.name}.log", "a") as f:
            yield f

    async def call(self, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Call `tool` on this server (no policy here: the gateway checks before calling)."""
        session = await self._wait_session()
        try:
            return await session.call_tool(tool, arguments, read_timeout_seconds=timedelta(seconds=self.cfg.timeout_seconds))
        except McpError as e:
            if e.error.code != types.CONNECTION_CLOSED:
                raise  # the server answered with an error: the connection is fine
            if self._session is session:
                self.error = "the connection closed during a call"
                self._broken.set()
            raise UpstreamUnavailable(f"MCP server {self.name!r} closed the connection during the call") from None
        except Exception as e:
            if self._session is session:  # not a connection made since then
                self.error = _describe(e)
                self._broken.set()  # reconnect now rather than at the next ping
            raise UpstreamUnavailable(f"MCP server {self.name!r} failed during the call: {self.error}") from None

    async def _wait_session(self) -> ClientSession:
        if self._session is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), WAIT_READY)
        if self._session is None:
            raise UpstreamUnavailable(f"MCP server {self.name!r} is {self.state}" + (f": {self.error}" if self.error else ""))
        return self._session

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(kind, {"server": self.name, **data})


async def _all_tools(session: ClientSession) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    while True:
        page = await session.list_tools(cursor)
        tools.extend(page.tools)
        cursor = page.nextCursor
        if not cursor:
            return tools


def _with_base_env(env: dict[str, str]) -> dict[str, str]:
    from mcp.client.stdio import get_default_environment

    return {**get_default_environment(), **env}


def _describe(e: BaseException) -> str:
    """A one-line reason, looking inside exception groups (anyio wraps transport errors)."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
