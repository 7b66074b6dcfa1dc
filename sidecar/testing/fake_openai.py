"""A fake OpenAI Chat Completions upstream on loopback that speaks the real wire format.

    async with FakeOpenAI() as fake:                 # base URL for a provider: fake.base_url
        fake.script(Reply(text="hi"), Error(429, headers={"retry-after": "1"}))
        ...                                          # inspect fake.requests afterwards

`POST /v1/chat/completions` answers the next scripted behaviour (or `fake.default`): a
`Reply` as one `chat.completion` JSON or, with `"stream": true`, as `chat.completion.chunk`
SSE ending in `data: [DONE]`, with the choiceless usage chunk when the request asked for
`stream_options.include_usage`; an `Error` in OpenAI's error shape (or vLLM's, Ollama's,
FastAPI's); a `StreamError` as an error chunk after some content. Tool calls stream as an
opening piece (id, name) and argument pieces; reasoning streams in `reasoning_content`
(DeepSeek, vLLM) or `reasoning` (OpenRouter, Groq). `Wire` injects what real servers do
to streams: byte splits anywhere (inside UTF-8 too), CRLF, keep-alive comments, content and
finish in one chunk, no finish reason, no [DONE], interleaved or bundled tool arguments, a
name after the arguments, numeric ids, usage in Groq's `x_groq`, a cut inside tool arguments.
`GET /v1/models` lists models. `validate` (a callable raising ValueError) checks each
request body the way a strict server would, answering 400 with its message.

    python -m sidecar.testing.fake_openai --port 0    # prints "listening on http://127.0.0.1:PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import msgspec
from aiohttp import web

from sidecar.testing.anthropic_sse import estimate_tokens, new_id, split_even, split_text
from sidecar.testing.fake_anthropic import _abort, serve_until_signalled
from sidecar.testing.fake_server import FakeServer

DEFAULT_TEXT = "Hello from the fake OpenAI upstream."
MODELS = ("gpt-fake-large", "gpt-fake-mini")
ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
               429: "requests", 500: "server_error", 503: "server_error"}  # fmt: skip
ERROR_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}
ERROR_MESSAGES = {
    400: "Invalid request.",
    401: "Incorrect API key provided: sk-fake. You can find your API key at https://platform.openai.com/account/api-keys.",
    404: "The model `gpt-missing` does not exist or you do not have access to it.",
    429: "Rate limit reached for requests. Please try again in 1s.",
    500: "The server had an error while processing your request. Sorry about that!",
    503: "The engine is currently overloaded, please try again later.",
}
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class ToolCall:
    """A function call in a reply; `arguments` is JSON text (a dict is encoded)."""

    name: str
    arguments: str | dict[str, Any] = "{}"
    id: str | None = None

    @property
    def args_text(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass(frozen=True)
class Wire:
    """How a streamed reply is put on the wire (all off: what api.openai.com does)."""

    split_bytes: int | None = None  # write the body in pieces of this many bytes
    crlf: bool = False  # CRLF line endings
    keepalive: bool = False  # `: keep-alive` comments between chunks
    content_with_finish: bool = False  # the last delta carries finish_reason (no finish chunk)
    no_finish_reason: bool = False  # never a finish_reason
    no_done: bool = False  # no `data: [DONE]` at the end
    interleave_tool_arguments: bool = False  # open every call, then alternate argument pieces
    bundle_tool_calls: bool = False  # each call whole (id, name, arguments) in one chunk
    name_after_arguments: bool = False  # a call's first piece has arguments but no id or name
    numeric_tool_ids: bool = False  # ids "0", "1", ... (some routers)
    usage: str = "chunk"  # chunk (when asked for) | x_groq (on the finish chunk) | none
    cut_in_tool_arguments: str | None = None  # "clean" end or "reset" half-way through the last call


@dataclass(frozen=True)
class Reply:
    """A completion: optional reasoning, text, refusal and tool calls."""

    text: str | None = DEFAULT_TEXT
    reasoning: str | None = None
    reasoning_field: str = "reasoning_content"
    refusal: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None  # None: tool_calls when there are calls, else stop
    stop_reason: str | None = None  # vLLM's matched stop sequence
    chunks: int | None = None  # text pieces (None: one per word)
    arg_chunks: int = 3
    prompt_tokens: int | None = None  # None: request bytes / 4
    cached_tokens: int = 0
    completion_tokens: int | None = None  # None: words + argument bytes / 4
    model: str | None = None
    delay: float = 0.0  # seconds between streamed chunks
    wire: Wire = field(default_factory=Wire)

    @property
    def finish(self) -> str:
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")


@dataclass(frozen=True)
class Error:
    """An HTTP error; `shape` is openai ({"error": {...}}), vllm ({"object": "error", ...}),
    ollama ({"error": "text"}) or detail ({"detail": "text"})."""

    status: int = 500
    message: str | None = None
    type: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    shape: str = "openai"

    def body(self) -> dict[str, Any]:
        message = self.message or ERROR_MESSAGES.get(self.status, "Error")
        if self.shape == "ollama":
            return {"error": message}
        if self.shape == "detail":
            return {"detail": message}
        etype = self.type or ERROR_TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        if self.shape == "vllm":
            return {"object": "error", "message": message, "type": etype, "param": None, "code": self.status}
        return {"error": {"message": message, "type": etype, "param": None, "code": self.code or ERROR_CODES.get(self.status)}}


@dataclass(frozen=True)
class StreamError:
    """Stream `after_chunks` chunks of `reply`, then an error chunk, then end."""

    after_chunks: int = 2
    message: str = "The server had an error while processing your request."
    code: int = 500
    reply: Reply = field(default_factory=Reply)


Behaviour: TypeAlias = Reply | Error | StreamError


def completion_tokens(reply: Reply) -> int:
    """The completion_tokens a reply reports."""
    if reply.completion_tokens is not None:
        return reply.completion_tokens
    words = len(" ".join(x for x in (reply.text, reply.reasoning, reply.refusal) if x).split())
    return max(1, words + sum(len(c.args_text) for c in reply.tool_calls) // 4)


def usage_json(reply: Reply, body: bytes) -> dict[str, Any]:
    """OpenAI's usage object: prompt_tokens includes the cached ones."""
    prompt = reply.prompt_tokens if reply.prompt_tokens is not None else estimate_tokens(body)
    out = completion_tokens(reply)
    reasoning = len((reply.reasoning or "").split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": out,
        "total_tokens": prompt + out,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0},
    }


def _tool_ids(reply: Reply) -> list[str]:
    if reply.wire.numeric_tool_ids:
        return [str(i) for i in range(len(reply.tool_calls))]
    return [c.id or new_id("call_", 24) for c in reply.tool_calls]


def completion_body(reply: Reply, model: str, body: bytes) -> dict[str, Any]:
    """The non-streaming `chat.completion` for `reply`."""
    msg: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": reply.refusal}
    if reply.reasoning is not None:
        msg[reply.reasoning_field] = reply.reasoning
    if reply.tool_calls:
        msg["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": c.name, "arguments": c.args_text}}
            for i, c in zip(_tool_ids(reply), reply.tool_calls, strict=True)
        ]
    choice: dict[str, Any] = {"index": 0, "message": msg, "logprobs": None,
                              "finish_reason": None if reply.wire.no_finish_reason else reply.finish}  # fmt: skip
    if reply.stop_reason is not None:
        choice["stop_reason"] = reply.stop_reason
    return {"id": new_id("chatcmpl-", 29), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [choice], "usage": usage_json(reply, body), "system_fingerprint": "fp_fake"}  # fmt: skip


def _call_pieces(i: int, tool_id: str, call: ToolCall, reply: Reply) -> list[dict[str, Any]]:
    """The tool_calls delta entries of one call, in the order they are streamed."""
    args = call.args_text
    if reply.wire.bundle_tool_calls:
        return [{"index": i, "id": tool_id, "type": "function", "function": {"name": call.name, "arguments": args}}]
    opening = {"index": i, "id": tool_id, "type": "function", "function": {"name": call.name, "arguments": ""}}
    rest = [{"index": i, "function": {"arguments": p}} for p in (split_even(args, reply.arg_chunks) if args else [])]
    if reply.wire.name_after_arguments and rest:
        return [rest[0], opening, *rest[1:]]
    return [opening, *rest]


def _tool_deltas(reply: Reply) -> list[list[dict[str, Any]]]:
    """The tool_calls delta list of each chunk that carries tool calls."""
    per_call = [_call_pieces(i, tool_id, call, reply)
                for i, (tool_id, call) in enumerate(zip(_tool_ids(reply), reply.tool_calls, strict=True))]  # fmt: skip
    if not reply.wire.interleave_tool_arguments:
        return [[d] for pieces in per_call for d in pieces]
    out = [[pieces[0]] for pieces in per_call]
    tails = [pieces[1:] for pieces in per_call]
    while any(tails):
        for t in tails:
            if t:
                out.append([t.pop(0)])
    return out


def stream_chunks(reply: Reply, model: str, body: bytes, include_usage: bool) -> list[dict[str, Any] | str]:
    """The chunks of a streamed reply (dicts), and "[DONE]"."""
    cid, created, w = new_id("chatcmpl-", 29), int(time.time()), reply.wire

    def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "fp_fake", "choices": choices, **extra}  # fmt: skip

    out: list[dict[str, Any] | str] = [chunk({"role": "assistant", "content": ""})]
    if reply.reasoning:
        out += [chunk({reply.reasoning_field: p}) for p in split_text(reply.reasoning, reply.chunks)]
    out += [chunk({"content": p}) for p in split_text(reply.text or "", reply.chunks)]
    out += [chunk({"refusal": p}) for p in split_text(reply.refusal or "", reply.chunks)]
    tools = _tool_deltas(reply)
    out += [chunk({"tool_calls": d}) for d in tools]
    if w.cut_in_tool_arguments and reply.tool_calls:
        return out[: len(out) - max(1, (reply.arg_chunks + 1) // 2)]
    usage = usage_json(reply, body)
    extra = {"x_groq": {"usage": usage}} if w.usage == "x_groq" else {}
    if w.no_finish_reason:
        pass
    elif w.content_with_finish and len(out) > 1 and isinstance(out[-1], dict):
        last = out[-1]
        last["choices"][0]["finish_reason"] = reply.finish
        last.update(extra)
    else:
        out.append(chunk({}, reply.finish, **extra))
    if reply.stop_reason is not None:
        for c in reversed(out):
            if isinstance(c, dict) and c["choices"]:
                c["choices"][0]["stop_reason"] = reply.stop_reason
                break
    if include_usage and w.usage == "chunk":
        out.append(chunk(None, usage=usage))
    if not w.no_done:
        out.append("[DONE]")
    return out


def frame(item: dict[str, Any] | str, wire: Wire) -> bytes:
    """One SSE event: `data: ...` and a blank line (CRLF with `wire.crlf`)."""
    data = item.encode() if isinstance(item, str) else _encode(item)
    nl = b"\r\n" if wire.crlf else b"\n"
    head = b": keep-alive" + nl + nl if wire.keepalive else b""
    return head + b"data: " + data + nl + nl


class FakeOpenAI(FakeServer["Behaviour"]):
    """A fake OpenAI-format API on loopback: pops a scripted behaviour per chat completion."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, default: Behaviour | None = None,
                 validate: Callable[[dict[str, Any]], None] | None = None) -> None:  # fmt: skip
        super().__init__(default or Reply(), host=host, port=port)
        self.validate = validate
        self.app.router.add_post("/v1/chat/completions", self._chat)
        self.app.router.add_get("/v1/models", self._models)

    @property
    def base_url(self) -> str:
        """The API base URL a provider is configured with (`.../v1`)."""
        return self.url + "/v1"

    def bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of the chat completion requests received, in order."""
        return [r.json() for r in self.requests if r.path.endswith("/chat/completions")]

    # ------------------------------------------------------------ handlers

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.record(request, body)
        try:
            payload = msgspec.json.decode(body)
            if not isinstance(payload, dict) or not isinstance(payload.get("model"), str):
                raise ValueError("you must provide a model parameter")
            if not isinstance(payload.get("messages"), list) or not payload["messages"]:
                raise ValueError("'messages' must be a non-empty array")
            if self.validate is not None:
                self.validate(payload)
        except (ValueError, msgspec.DecodeError) as e:
            return self._error(Error(400, message=str(e)))
        behaviour = self.next_behaviour()
        if isinstance(behaviour, Error):
            return self._error(behaviour)
        reply = behaviour.reply if isinstance(behaviour, StreamError) else behaviour
        model = reply.model or payload["model"]
        if payload.get("stream") is not True:
            if isinstance(behaviour, StreamError):
                return self._error(Error(behaviour.code, behaviour.message))
            return web.Response(body=_encode(completion_body(reply, model, body)), content_type="application/json")
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        items = stream_chunks(reply, model, body, include_usage)
        if isinstance(behaviour, StreamError):
            items = [*items[: behaviour.after_chunks], {"error": {"message": behaviour.message, "code": behaviour.code}}]
        return await self._stream(request, reply, items)

    async def _stream(self, request: web.Request, reply: Reply, items: Sequence[dict[str, Any] | str]) -> web.StreamResponse:
        w = reply.wire
        resp = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
                                           "x-request-id": new_id("req_", 24)})  # fmt: skip
        await resp.prepare(request)
        frames = [frame(item, w) for item in items]
        if w.split_bytes:
            data = b"".join(frames)
            frames = [data[i : i + w.split_bytes] for i in range(0, len(data), w.split_bytes)]
        for i, piece in enumerate(frames):
            if reply.delay and i:
                await asyncio.sleep(reply.delay)
            await resp.write(piece)
        if w.cut_in_tool_arguments == "reset":
            await asyncio.sleep(0.02)  # let the client take in what was sent before the reset
            _abort(request)
            return resp
        await resp.write_eof()
        return resp

    def _error(self, e: Error) -> web.Response:
        headers = {"x-request-id": new_id("req_", 24), **e.headers}
        return web.Response(status=e.status, body=_encode(e.body()), headers=headers, content_type="application/json")

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self.record(request, b"")
        data = [{"id": m, "object": "model", "created": 1767225600, "owned_by": "fake"} for m in MODELS]
        return web.json_response({"object": "list", "data": data})


async def _serve(host: str, port: int) -> None:
    await serve_until_signalled(FakeOpenAI(host=host, port=port))


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the fake upstream (default replies) until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m sidecar.testing.fake_openai")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
