"""A fake Anthropic Messages API upstream on loopback that speaks the real wire format.

In process::

    async with FakeAnthropic() as fake:
        fake.script(Text("hi"), Error(429, headers={"retry-after": "1"}))
        ...  # point a client at fake.url; inspect fake.requests

As a separate process (``python -m sidecar.testing.fake_anthropic --port 0`` prints
``listening on http://127.0.0.1:PORT``), driven over HTTP: ``POST /__fake/script`` with a JSON
list of behaviours (``[{"kind": "text", "text": "hi"}]``) replaces the queue,
``POST /__fake/default`` with one behaviour sets the reply used when the queue is empty,
``POST /__fake/reset`` clears queue and recordings, ``GET /__fake/requests`` returns them.
`FakeAnthropicProcess` does all of this for a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import socket
import struct
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol

import msgspec
from aiohttp import web

from sidecar.errors import error_type_for
from sidecar.lifecycle import stop_on_signals
from sidecar.testing import anthropic_sse as sse
from sidecar.testing.fake_behaviours import (
    DEFAULT_REPLY,
    DEFAULT_TEXT,
    KINDS,
    Behaviour,
    Cut,
    Error,
    RecordedRequest,
    StallBeforeHeaders,
    StallMidStream,
    StreamError,
    Text,
    ToolUse,
    behaviour_from_json,
    behaviour_to_json,
)
from sidecar.testing.fake_process import FakeAnthropicProcess
from sidecar.testing.fake_server import FakeServer

__all__ = [
    "DEFAULT_REPLY",
    "DEFAULT_TEXT",
    "KINDS",
    "Behaviour",
    "Cut",
    "Error",
    "FakeAnthropic",
    "FakeAnthropicProcess",
    "RecordedRequest",
    "StallBeforeHeaders",
    "StallMidStream",
    "StreamError",
    "Text",
    "ToolUse",
    "behaviour_from_json",
    "behaviour_to_json",
    "main",
]
DEFAULT_MODEL = "claude-opus-4-8"
ORGANIZATION_ID = "7e6b0f9c-3d1a-4c5e-9b2f-0a1d2c3e4f50"
MODELS = [
    ("claude-opus-4-8", "Claude Opus 4.8", "2026-09-30T00:00:00Z"),
    ("claude-sonnet-5", "Claude Sonnet 5", "2026-06-15T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-15T00:00:00Z"),
]
# (header infix, limit, used): plausible values for the anthropic-ratelimit-* headers.
_RATE_LIMITS = [
    ("requests", 4000, 1),
    ("input-tokens", 2_000_000, 0),
    ("output-tokens", 400_000, 0),
    ("tokens", 2_400_000, 0),
]


# ---------------------------------------------------------------- the server


def _abort(request: web.BaseRequest) -> None:
    """Reset the connection (SO_LINGER 0 makes close send RST) so the client sees an error."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


_Handler = Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse]]


class FakeAnthropic(FakeServer[Behaviour]):
    """A fake Anthropic API on loopback: pops a scripted behaviour per POST /v1/messages."""

    handler_cancellation = True

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, default: Behaviour = DEFAULT_REPLY
    ) -> None:
        # The real API takes request bodies up to 32 MB (images, PDFs); aiohttp's default is 1 MiB.
        super().__init__(default, host=host, port=port, client_max_size=32 * 1024 * 1024)
        self._reset_second = -1
        self._reset_at = ""
        self._models_body = sse.encode_json(self._models_json())
        routes: list[tuple[str, str, _Handler]] = [
            ("POST", "/v1/messages", self._messages),
            ("POST", "/v1/messages/count_tokens", self._count_tokens),
            ("GET", "/v1/models", self._models),
            ("HEAD", "/", self._head),
            ("POST", "/__fake/script", self._control_script),
            ("POST", "/__fake/default", self._control_default),
        ]
        for method, path, handler in routes:
            self.app.router.add_route(method, path, handler)

    # ------------------------------------------------------------ responses

    def _headers(self, content_type: str) -> tuple[dict[str, str], str]:
        now = int(time.time())
        if now != self._reset_second:
            self._reset_second = now
            self._reset_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 1))
        request_id = sse.new_id("req_011C", 20)
        headers = {
            "Content-Type": content_type,
            "request-id": request_id,
            "anthropic-organization-id": ORGANIZATION_ID,
        }
        for kind, limit, used in _RATE_LIMITS:
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(limit - used)
            headers[f"anthropic-ratelimit-{kind}-reset"] = self._reset_at
        return headers, request_id

    def _error(
        self, status: int, error_type: str | None = None, message: str | None = None,
        extra: Mapping[str, str] | None = None, should_retry: bool | None = None,
    ) -> web.Response:  # fmt: skip
        error_type = error_type or error_type_for(status)
        headers, request_id = self._headers(sse.JSON_CONTENT_TYPE)
        if should_retry is not None:
            headers["x-should-retry"] = "true" if should_retry else "false"
        headers.update(extra or {})
        message = message or sse.ERROR_MESSAGES.get(error_type, "Error")
        body = sse.encode_json(sse.error_body(error_type, message, request_id))
        return web.Response(status=status, body=body, headers=headers)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.record(request, body)
        try:
            payload = msgspec.json.decode(body)
        except msgspec.DecodeError:
            payload = None
        if not isinstance(payload, dict):
            return self._error(400, message="There was an error parsing the body of your request.")
        behaviour = self.next_behaviour()
        return await self._perform(request, behaviour, payload, body)

    async def _perform(
        self, request: web.Request, behaviour: Behaviour, payload: dict[str, Any], body: bytes
    ) -> web.StreamResponse:
        if isinstance(behaviour, StallBeforeHeaders):
            await asyncio.sleep(behaviour.seconds)
            return await self._perform(request, behaviour.then, payload, body)
        if isinstance(behaviour, Error):
            b = behaviour
            return self._error(b.status, b.type, b.message, b.headers, b.should_retry)
        streaming = payload.get("stream") is True
        if isinstance(behaviour, StreamError) and not streaming:
            status = sse.ERROR_TYPE_STATUSES.get(behaviour.type, 500)
            return self._error(status, behaviour.type, behaviour.message)
        reply = behaviour if isinstance(behaviour, Text | ToolUse) else behaviour.reply
        rendered = reply.render()
        usage = dataclasses.replace(
            sse.Usage(sse.estimate_tokens(body), rendered.output_tokens), **reply.usage
        )
        model = str(reply.model or payload.get("model") or DEFAULT_MODEL)
        stop_reason = reply.stop_reason or rendered.stop_reason
        message_id = sse.new_id("msg_01")
        if not streaming:
            message = sse.message_body(message_id, model, rendered.blocks, usage, stop_reason)
            return await self._send_message(request, sse.encode_json(message), behaviour)
        events = sse.stream_events(message_id, model, rendered.content, usage, stop_reason)
        if isinstance(behaviour, StreamError):
            events = [
                *events[: behaviour.after_events],
                sse.error_event(behaviour.type, behaviour.message),
            ]
        cut = behaviour if isinstance(behaviour, Cut) else None
        stall = behaviour if isinstance(behaviour, StallMidStream) else None
        return await self._send_stream(request, events, reply.delay_between_events, cut, stall)

    async def _send_stream(
        self,
        request: web.Request,
        events: Sequence[bytes],
        delay: float,
        cut: Cut | None,
        stall: StallMidStream | None,
    ) -> web.StreamResponse:
        headers, _ = self._headers(sse.SSE_CONTENT_TYPE)
        headers["Cache-Control"] = "no-cache"
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        for i, event in enumerate(events):
            if cut is not None and i == cut.after_events:
                break
            if stall is not None and i == stall.after_events:
                await asyncio.sleep(stall.seconds)
            elif delay and i:
                await asyncio.sleep(delay)
            await resp.write(event)
        if cut is not None and not cut.clean_end:
            # Never write_eof here: the final empty chunk would be a clean end.
            await asyncio.sleep(cut.abort_delay)
            _abort(request)
            return resp
        if cut is not None and cut.end_delay:
            await asyncio.sleep(cut.end_delay)
        await resp.write_eof()
        return resp

    async def _send_message(
        self, request: web.Request, body: bytes, behaviour: Behaviour
    ) -> web.StreamResponse:
        headers, _ = self._headers(sse.JSON_CONTENT_TYPE)
        if not isinstance(behaviour, Cut | StallMidStream):
            return web.Response(body=body, headers=headers)
        split = len(body) // 2
        if isinstance(behaviour, Cut) and behaviour.after_bytes is not None:
            split = behaviour.after_bytes
        resp = web.StreamResponse(headers=headers)
        resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[:split])
        if isinstance(behaviour, Cut):
            await asyncio.sleep(behaviour.abort_delay)
            _abort(request)
            return resp
        await asyncio.sleep(behaviour.seconds)
        await resp.write(body[split:])
        await resp.write_eof()
        return resp

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.record(request, body)
        try:
            msgspec.json.decode(body)
        except msgspec.DecodeError:
            return self._error(400, message="There was an error parsing the body of your request.")
        headers, _ = self._headers(sse.JSON_CONTENT_TYPE)
        return web.Response(
            body=sse.encode_json({"input_tokens": sse.estimate_tokens(body)}), headers=headers
        )

    @staticmethod
    def _models_json() -> dict[str, Any]:
        data = [
            {"type": "model", "id": i, "display_name": n, "created_at": c} for i, n, c in MODELS
        ]
        return {"data": data, "has_more": False, "first_id": MODELS[0][0], "last_id": MODELS[-1][0]}

    async def _models(self, request: web.Request) -> web.StreamResponse:
        headers, _ = self._headers(sse.JSON_CONTENT_TYPE)
        return web.Response(body=self._models_body, headers=headers)

    async def _head(self, request: web.Request) -> web.StreamResponse:
        return web.Response()

    # ------------------------------------------------------------ control

    async def _control_script(self, request: web.Request) -> web.StreamResponse:
        try:
            items = msgspec.json.decode(await request.read())
            if not isinstance(items, list):
                raise ValueError("expected a JSON list of behaviours")
            behaviours = [behaviour_from_json(item) for item in items]
        except (ValueError, TypeError, msgspec.DecodeError) as e:
            return web.json_response({"error": str(e)}, status=400)
        self.script(*behaviours)
        return web.json_response({"queued": len(behaviours)})

    async def _control_default(self, request: web.Request) -> web.StreamResponse:
        try:
            self.default = behaviour_from_json(msgspec.json.decode(await request.read()))
        except (ValueError, TypeError, msgspec.DecodeError) as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response({"default": behaviour_to_json(self.default)})

class _Servable(Protocol):
    @property
    def url(self) -> str: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


async def serve_until_signalled(fake: _Servable) -> None:
    """Start `fake`, print its address for the parent process, serve until SIGTERM or SIGINT."""
    await fake.start()
    print(f"listening on {fake.url}", flush=True)
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        await stop.wait()
    finally:
        await fake.close()


async def _serve(host: str, port: int) -> None:
    await serve_until_signalled(FakeAnthropic(host=host, port=port))


CONTROL_HELP = f"""control endpoints (JSON over HTTP on the same address):
  POST /__fake/script    a JSON list of behaviours replaces the queue of replies,
                         e.g. [{{"kind": "text", "text": "hi"}}, {{"kind": "error", "status": 429}}]
  POST /__fake/default   one behaviour: the reply when the queue is empty
  POST /__fake/reset     clear the queue and the recorded requests
  GET  /__fake/requests  the requests received so far (method, path, headers, body)
behaviour kinds: {", ".join(sorted(KINDS))}

example:
  curl -s 127.0.0.1:PORT/__fake/script -d '[{{"kind": "text", "text": "hello"}}]'
"""


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the fake upstream until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m sidecar.testing.fake_anthropic",
        description="A fake Anthropic Messages API on loopback (POST /v1/messages, streamed or not) to try\n"
        "the sidecar offline: point a provider's base_url at the address it prints.",
        epilog=CONTROL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=loop_factory) as runner,
    ):
        runner.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
