"""What every fake upstream shares: serving on loopback, a queue of scripted behaviours with a
default, the requests it received, and the control endpoints a test in another process uses:

    POST /__fake/reset     clear the queue and the recorded requests
    GET  /__fake/requests  the requests received so far (method, path, headers, body)

A fake subclasses `FakeServer[ItsBehaviour]`, adds its API's routes to `self.app` and takes
each answer's behaviour from `next_behaviour()`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from aiohttp import web

from sidecar.testing.fake_behaviours import RecordedRequest

B = TypeVar("B")


class FakeServer(Generic[B]):
    """A fake upstream on loopback: pops a scripted behaviour per call, else its default."""

    # Cancel a handler whose client went away (the fakes that stall rely on it).
    handler_cancellation = False

    def __init__(self, default: B, *, host: str = "127.0.0.1", port: int = 0, client_max_size: int = 64 * 1024 * 1024) -> None:
        self.host = host
        self.port = port
        self.default: B = default
        self.requests: list[RecordedRequest] = []
        self._queue: deque[B] = deque()
        self._runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=client_max_size)
        self.app.router.add_route("POST", "/__fake/reset", self._control_reset)
        self.app.router.add_route("GET", "/__fake/requests", self._control_requests)

    @property
    def url(self) -> str:
        """The base URL, e.g. http://127.0.0.1:54321 (valid once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def script(self, *behaviours: B) -> None:
        """Replace the queue of behaviours."""
        self._queue = deque(behaviours)

    def enqueue(self, *behaviours: B) -> None:
        """Append behaviours to the queue."""
        self._queue.extend(behaviours)

    @property
    def pending(self) -> int:
        """How many scripted behaviours are still queued."""
        return len(self._queue)

    def next_behaviour(self) -> B:
        """The next scripted behaviour, else the default."""
        return self._queue.popleft() if self._queue else self.default

    def reset(self) -> None:
        """Clear the queue and the recorded requests."""
        self._queue.clear()
        self.requests.clear()

    def record(self, request: web.BaseRequest, body: bytes, path: str | None = None) -> RecordedRequest:
        """Remember a request as it arrived (raw header names and order kept)."""
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        rec = RecordedRequest(request.method, path if path is not None else request.path, request.query_string, headers, body, time.monotonic())
        self.requests.append(rec)
        return rec

    async def start(self) -> None:
        """Bind and start serving; `port` becomes the real port if it was 0."""
        self._runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, handler_cancellation=self.handler_cancellation, shutdown_timeout=0.5
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        """Stop serving and drop open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def _control_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return web.json_response({"ok": True})

    async def _control_requests(self, request: web.Request) -> web.StreamResponse:
        return web.json_response([r.to_json() for r in self.requests])


async def serve_on_loopback(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve `app` on a free 127.0.0.1 port: its runner (clean it up) and base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


class MessagesUpstream:
    """An Anthropic upstream on loopback whose `POST /v1/messages` a test writes itself
    (`_messages`); it records each request's JSON in `received`, and `released` (set on exit)
    lets an answer wait for the test."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        self._runner, self.url = await serve_on_loopback(app)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.released.set()
        assert self._runner is not None
        await self._runner.cleanup()

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError  # each upstream answers in its own way
