"""A fake Anthropic upstream that answers each request with that request's own marker.

The ingress fuzzer (and any test that hunts for cross-talk) puts a marker in the request
(the first user message's text, and the ``x-fuzz-marker`` header); the answer carries it
back in its text and in ``x-echo-marker``, so an answer that reached the wrong client is
seen at once. Every answer has ``x-fake-upstream: 1``: a 5xx without it came from the
sidecar itself. A marker that starts with ``upstream-500`` makes the fake answer 500.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from sidecar.testing import anthropic_sse as sse
from sidecar.testing.fake_server import FakeServer

MARKER_HEADER = "x-fuzz-marker"
ECHO_HEADER = "x-echo-marker"
UPSTREAM_HEADER = "x-fake-upstream"
FAIL_PREFIX = "upstream-500"


def marker_of(body: Any) -> str:
    """The marker in a request body: the first message's text (a string or a text block)."""
    try:
        content = body["messages"][0]["content"]
        if isinstance(content, list):
            content = content[0]["text"]
    except (KeyError, IndexError, TypeError):
        return ""
    return content if isinstance(content, str) else ""


class EchoUpstream(FakeServer[None]):
    """Serve the echo app on a loopback port (use as an async context manager). It scripts
    nothing and records nothing: the fuzzer's bodies are many and large."""

    def __init__(self) -> None:
        super().__init__(None, client_max_size=1 << 30)
        self.app.router.add_post("/v1/messages", self._messages)
        self.app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        self.app.router.add_get("/v1/models", self._models)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        headers = {UPSTREAM_HEADER: "1", "request-id": sse.new_id("req_")}
        try:
            body = msgspec.json.decode(await request.read())
        except msgspec.DecodeError:
            # What the real API answers for a body it cannot read (it never echoes a marker).
            err = sse.error_body("invalid_request_error", "There was an issue with the request body")
            return web.Response(status=400, body=sse.encode_json(err), content_type="application/json", headers=headers)
        marker = marker_of(body)
        headers[ECHO_HEADER] = marker
        if marker.startswith(FAIL_PREFIX):
            err = sse.error_body("api_error", "Internal server error")
            return web.Response(status=500, body=sse.encode_json(err), content_type="application/json", headers=headers)
        model = body.get("model", "claude-opus-4-8") if isinstance(body, dict) else "claude-opus-4-8"
        model = model if isinstance(model, str) else "claude-opus-4-8"
        usage = sse.Usage(input_tokens=7, output_tokens=3)
        blocks = [sse.text_block(marker or "-", chunks=1)]  # one piece: the marker is findable in SSE
        msg_id = sse.new_id("msg_")
        if isinstance(body, dict) and body.get("stream") is True:
            resp = web.StreamResponse(headers={**headers, "content-type": "text/event-stream"})
            await resp.prepare(request)
            for event in sse.stream_events(msg_id, model, sse.content_events(blocks), usage, "end_turn"):
                await resp.write(event)
            await resp.write_eof()
            return resp
        out = sse.message_body(msg_id, model, blocks, usage, "end_turn")
        return web.Response(body=sse.encode_json(out), content_type="application/json", headers=headers)

    async def _count_tokens(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"input_tokens": 7}, headers={UPSTREAM_HEADER: "1"})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [], "has_more": False}, headers={UPSTREAM_HEADER: "1"})
