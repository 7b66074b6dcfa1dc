"""A fake Amazon Bedrock runtime on loopback that speaks the real wire formats.

- `POST /model/{id}/invoke` and `/invoke-with-response-stream` (Claude: the Anthropic body
  with Bedrock's rules checked; the stream is AWS event-stream `chunk` events whose `bytes`
  are Anthropic event JSON, message_stop carrying `amazon-bedrock-invocationMetrics`);
- `POST /model/{id}/converse` and `/converse-stream` (the Converse shapes, checked the way
  Bedrock checks them: alternating roles, no blank text, tool names and ids, tool results
  that answer the previous turn's tool uses, a toolConfig whenever tools appear);
- `POST /model/{id}/count-tokens` (`invokeModel` or `converse` input);
- errors as Bedrock sends them: `{"message": ...}` with `x-amzn-ErrorType`.

Every request must carry a valid SigV4 signature for the fake's `AwsKeys` (recomputed from
the request exactly as received) or the fake's Bedrock API key as a Bearer token.

Quirks: `split` writes stream bytes in pieces of that many bytes (frames cut anywhere);
behaviours `AwsError`, `StreamException` (an exception frame after N events), `CutFrame`
(half a frame, then a reset) and `CorruptFrame` (a frame with a bad CRC).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import hmac
import os
import random
import re
import socket
import struct
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

import msgspec
from aiohttp import web

from sidecar.protocol import eventstream
from sidecar.providers import betas
from sidecar.providers.aws_auth import SigningInput, signature
from sidecar.testing import anthropic_sse as sse
from sidecar.testing.fake_behaviours import Rendered, Text, ToolUse
from sidecar.testing.fake_server import FakeServer
from sidecar.testing.harness import InProcessSidecar, sidecar_in_process

if TYPE_CHECKING:
    from pytest import MonkeyPatch

_PATH = re.compile(r"^/model/([^/]+)/(invoke|invoke-with-response-stream|converse|converse-stream|count-tokens)$")
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$"
)
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ABORT_DELAY = 0.02
_BEDROCK_NS = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)
CONVERSE_KEYS = {"messages", "system", "inferenceConfig", "toolConfig", "additionalModelRequestFields",
                 "guardrailConfig", "promptVariables", "requestMetadata", "performanceConfig"}  # fmt: skip
BLOCK_KEYS = {"text", "image", "document", "toolUse", "toolResult", "reasoningContent", "cachePoint", "video"}


@dataclass(frozen=True)
class AwsKeys:
    """The credentials the fake accepts."""

    access_key_id: str = "AKIAFAKEFAKEFAKE1234"
    secret_access_key: str = "fake/secret+key/0123456789abcdefghijKLMN"
    session_token: str | None = None


# ---------------------------------------------------------------- behaviours


@dataclass(frozen=True)
class AwsError:
    """Answer an HTTP error the way Bedrock does."""

    kind: ClassVar[str] = "aws_error"
    status: int = 429
    code: str = "ThrottlingException"
    message: str = "Too many requests, please wait before trying again."


@dataclass(frozen=True)
class StreamException:
    """Stream `after_events` events (0: none), then an exception frame, then end."""

    kind: ClassVar[str] = "stream_exception"
    after_events: int = 2
    code: str = "modelStreamErrorException"
    message: str = "The model encountered an error while streaming."
    reply: Text | ToolUse = field(default_factory=Text)


@dataclass(frozen=True)
class CutFrame:
    """Stream `after_events` events and half of the next frame, then reset the connection."""

    kind: ClassVar[str] = "cut_frame"
    after_events: int = 2
    reply: Text | ToolUse = field(default_factory=Text)


@dataclass(frozen=True)
class CorruptFrame:
    """Stream `after_events` events, then a frame whose message CRC is wrong."""

    kind: ClassVar[str] = "corrupt_frame"
    after_events: int = 2
    reply: Text | ToolUse = field(default_factory=Text)


Behaviour: TypeAlias = Text | ToolUse | AwsError | StreamException | CutFrame | CorruptFrame


class Invalid(Exception):
    """A request Bedrock would refuse: answered as a ValidationException."""


# ---------------------------------------------------------------- the server


def _abort(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _padding() -> str:
    return "".join(random.choices("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", k=random.randint(1, 30)))


class FakeBedrock(FakeServer["Behaviour"]):
    """A fake Bedrock runtime: pops a scripted behaviour per model call."""

    def __init__(
        self, *, keys: AwsKeys | None = None, api_key: str | None = None, region: str = "us-east-1",
        split: int | None = None, host: str = "127.0.0.1",
    ) -> None:  # fmt: skip
        self.keys = keys or AwsKeys()
        self.api_key = api_key
        self.region = region
        self.split = split
        super().__init__(Text(), host=host)
        self.counts_tokens = True  # False: CountTokens refuses every model, as for unsupported ones
        self.auth_failures: list[str] = []
        self.app.router.add_route("POST", "/{tail:.*}", self._handle)

    # ------------------------------------------------------------ plumbing

    def _error(self, status: int, code: str, message: str) -> web.Response:
        headers = {"x-amzn-ErrorType": code + _BEDROCK_NS, "x-amzn-RequestId": str(uuid.uuid4())}
        return web.json_response({"message": message}, status=status, headers=headers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        raw_path = request.raw_path.split("?", 1)[0]
        headers = self.record(request, body, raw_path).headers
        failure = self._check_auth(request, headers, body)
        if failure is not None:
            self.auth_failures.append(failure[1])
            return self._error(403, *failure)
        m = _PATH.match(raw_path)
        if m is None:
            return self._error(404, "UnknownOperationException", f"no such operation: POST {raw_path}")
        model = urllib.parse.unquote(m.group(1))
        action = m.group(2)
        try:
            payload = msgspec.json.decode(body)
            if not isinstance(payload, dict):
                raise Invalid("the request body must be a JSON object")
            if action == "count-tokens":
                if not self.counts_tokens:
                    return self._error(400, "ValidationException", "The provided model doesn't support counting tokens.")
                return self._count_tokens(payload)
            behaviour = self.next_behaviour()
            if isinstance(behaviour, AwsError):
                return self._error(behaviour.status, behaviour.code, behaviour.message)
            if action.startswith("invoke"):
                check_invoke(payload)
                return await self._invoke(request, model, body, behaviour, action == "invoke-with-response-stream")
            check_converse(payload)
            return await self._converse(request, body, behaviour, action == "converse-stream")
        except (Invalid, msgspec.DecodeError) as e:
            return self._error(400, "ValidationException", str(e))

    def _check_auth(self, request: web.Request, headers: list[tuple[str, str]], body: bytes) -> tuple[str, str] | None:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            if self.api_key is not None and hmac.compare_digest(auth[7:], self.api_key):
                return None
            return "UnrecognizedClientException", "Invalid API Key format: Must start with pre-defined prefix"
        m = _AUTH.match(auth)
        if m is None:
            return "MissingAuthenticationTokenException", "Missing Authentication Token"
        key_id, date, region, service, signed, sig = m.groups()
        if key_id != self.keys.access_key_id:
            return "UnrecognizedClientException", "The security token included in the request is invalid."
        if self.keys.session_token and request.headers.get("X-Amz-Security-Token") != self.keys.session_token:
            return "UnrecognizedClientException", "The security token included in the request is invalid."
        if region != self.region or service != "bedrock":
            return "InvalidSignatureException", f"Credential should be scoped to a valid region and service ({region}/{service})"
        amz_date = request.headers.get("X-Amz-Date", "")
        try:
            when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        except ValueError:
            return "IncompleteSignatureException", "X-Amz-Date is missing or malformed"
        if amz_date[:8] != date or abs(time.time() - when.timestamp()) > 300:
            return "InvalidSignatureException", "Signature expired or not yet valid"
        names = signed.split(";")
        if "host" not in names or "x-amz-date" not in names:
            return "IncompleteSignatureException", "host and x-amz-date must be signed"
        chosen = [(k, v) for k, v in headers if k.lower() in names]
        path, _, query = request.raw_path.partition("?")
        req = SigningInput(request.method, path, query, chosen, body)
        expected, _ = signature(req, self.keys.secret_access_key, region, service, amz_date)
        if not hmac.compare_digest(expected, sig):
            return "InvalidSignatureException", SIGNATURE_MISMATCH
        return None

    def _json(self, data: Any, extra: dict[str, str] | None = None) -> web.Response:
        headers = {"x-amzn-RequestId": str(uuid.uuid4()), **(extra or {})}
        return web.Response(body=msgspec.json.encode(data), content_type="application/json", headers=headers)

    async def _write_stream(self, request: web.Request, frames: list[bytes], tail: bytes = b"", cut: bool = False) -> web.StreamResponse:
        headers = {"x-amzn-RequestId": str(uuid.uuid4()), "Content-Type": "application/vnd.amazon.eventstream"}
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        data = b"".join(frames) + tail
        step = self.split or 0
        pieces = [data[i : i + step] for i in range(0, len(data), step)] if step else [*frames, tail]
        for piece in pieces:
            if piece:
                await resp.write(piece)
        if cut:
            await asyncio.sleep(ABORT_DELAY)  # let the client take in what was written first
            _abort(request)
            return resp
        await resp.write_eof()
        return resp

    # ------------------------------------------------------------ InvokeModel

    async def _invoke(self, request: web.Request, model: str, body: bytes, behaviour: Behaviour, stream: bool) -> web.StreamResponse:
        reply = _reply(behaviour)
        rendered = reply.render()
        usage = dataclasses.replace(sse.Usage(sse.estimate_tokens(body), rendered.output_tokens), **reply.usage)
        stop = reply.stop_reason or rendered.stop_reason
        message_id = sse.new_id("msg_bdrk_01")
        name = reply.model or model
        if not stream:
            msg = sse.message_body(message_id, name, rendered.blocks, usage, stop)
            counts = {"X-Amzn-Bedrock-Input-Token-Count": str(usage.input_tokens), "X-Amzn-Bedrock-Output-Token-Count": str(usage.output_tokens)}
            return self._json(msg, counts)
        events = sse.sse_events(b"".join(sse.stream_events(message_id, name, rendered.content, usage, stop)))
        frames = []
        for ev_name, data in events:
            if ev_name == "ping":
                continue  # Bedrock does not relay pings
            if ev_name == "message_stop":
                data = {**data, "amazon-bedrock-invocationMetrics": {
                    "inputTokenCount": usage.input_tokens, "outputTokenCount": usage.output_tokens,
                    "invocationLatency": 812, "firstByteLatency": 301}}  # fmt: skip
            chunk = {"bytes": base64.b64encode(msgspec.json.encode(data)).decode(), "p": _padding()}
            frames.append(eventstream.event("chunk", msgspec.json.encode(chunk)))
        return await self._stream_with(request, frames, behaviour)

    async def _stream_with(self, request: web.Request, frames: list[bytes], behaviour: Behaviour) -> web.StreamResponse:
        if isinstance(behaviour, StreamException):
            exc = eventstream.exception(behaviour.code, msgspec.json.encode({"message": behaviour.message}))
            return await self._write_stream(request, frames[: behaviour.after_events], exc)
        if isinstance(behaviour, CutFrame):
            nxt = frames[behaviour.after_events] if behaviour.after_events < len(frames) else frames[-1]
            return await self._write_stream(request, frames[: behaviour.after_events], nxt[: len(nxt) // 2], cut=True)
        if isinstance(behaviour, CorruptFrame):
            bad = bytearray(frames[behaviour.after_events])
            bad[-5] ^= 0xFF  # a payload byte: the message CRC no longer matches
            return await self._write_stream(request, frames[: behaviour.after_events], bytes(bad), cut=True)
        return await self._write_stream(request, frames)

    # ------------------------------------------------------------ Converse

    async def _converse(self, request: web.Request, body: bytes, behaviour: Behaviour, stream: bool) -> web.StreamResponse:
        reply = _reply(behaviour)
        rendered = reply.render()
        usage = {"inputTokens": sse.estimate_tokens(body), "outputTokens": rendered.output_tokens,
                 "totalTokens": sse.estimate_tokens(body) + rendered.output_tokens, **_converse_usage(reply.usage)}  # fmt: skip
        stop = reply.stop_reason or rendered.stop_reason
        content = converse_content(rendered)
        if not stream:
            return self._json({"output": {"message": {"role": "assistant", "content": content}},
                               "stopReason": stop, "usage": usage, "metrics": {"latencyMs": 420}})  # fmt: skip
        events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
        for i, block in enumerate(rendered.blocks):
            events.extend(_converse_block_events(i, block))
        events.append(("messageStop", {"stopReason": stop}))
        events.append(("metadata", {"usage": usage, "metrics": {"latencyMs": 420}}))
        frames = [eventstream.event(n, msgspec.json.encode({**d, "p": _padding()})) for n, d in events]
        return await self._stream_with(request, frames, behaviour)

    def _count_tokens(self, payload: dict[str, Any]) -> web.Response:
        inp = payload.get("input")
        if not isinstance(inp, dict) or len(inp) != 1:
            raise Invalid("input must hold exactly one of invokeModel or converse")
        if "invokeModel" in inp:
            raw = base64.b64decode(inp["invokeModel"]["body"], validate=True)
            inner = msgspec.json.decode(raw)
            check_invoke(inner)
            return self._json({"inputTokens": sse.estimate_tokens(raw)})
        if "converse" in inp:
            check_converse(inp["converse"], counting=True)
            return self._json({"inputTokens": sse.estimate_tokens(msgspec.json.encode(inp["converse"]))})
        raise Invalid(f"unknown count-tokens input {sorted(inp)}")


def _reply(behaviour: Behaviour) -> Text | ToolUse:
    if isinstance(behaviour, Text | ToolUse):
        return behaviour
    if isinstance(behaviour, AwsError):
        raise TypeError("an AwsError has no reply")  # answered before any reply is rendered
    return behaviour.reply


def _converse_usage(extra: dict[str, int]) -> dict[str, int]:
    out = {}
    if extra.get("cache_read_input_tokens"):
        out["cacheReadInputTokens"] = extra["cache_read_input_tokens"]
    if extra.get("cache_creation_input_tokens"):
        out["cacheWriteInputTokens"] = extra["cache_creation_input_tokens"]
    return out


def converse_content(rendered: Rendered) -> list[dict[str, Any]]:
    """A rendered reply's blocks in Converse form."""
    out: list[dict[str, Any]] = []
    for block in rendered.blocks:
        b = block.final
        if b["type"] == "text":
            out.append({"text": b["text"]})
        elif b["type"] == "thinking":
            out.append({"reasoningContent": {"reasoningText": {"text": b["thinking"], "signature": b["signature"]}}})
        elif b["type"] == "tool_use":
            out.append({"toolUse": {"toolUseId": b["id"], "name": b["name"], "input": b["input"]}})
    return out


def _converse_block_events(i: int, block: sse.Block) -> list[tuple[str, dict[str, Any]]]:
    b = block.final
    out: list[tuple[str, dict[str, Any]]] = []
    if b["type"] == "tool_use":
        out.append(("contentBlockStart", {"contentBlockIndex": i, "start": {"toolUse": {"toolUseId": b["id"], "name": b["name"]}}}))
    for d in block.deltas:
        if d["type"] == "text_delta":
            delta: dict[str, Any] = {"text": d["text"]}
        elif d["type"] == "thinking_delta":
            delta = {"reasoningContent": {"text": d["thinking"]}}
        elif d["type"] == "signature_delta":
            delta = {"reasoningContent": {"signature": d["signature"]}}
        else:
            delta = {"toolUse": {"input": d["partial_json"]}}
        out.append(("contentBlockDelta", {"contentBlockIndex": i, "delta": delta}))
    out.append(("contentBlockStop", {"contentBlockIndex": i}))
    return out


# ---------------------------------------------------------------- Bedrock's checks


def check_invoke(body: dict[str, Any]) -> None:
    """Refuse an InvokeModel body for Claude the way Bedrock does."""
    if body.get("anthropic_version") != "bedrock-2023-05-31":
        raise Invalid(f"anthropic_version: expected 'bedrock-2023-05-31', got {body.get('anthropic_version')!r}")
    for key in ("model", "stream"):
        if key in body:
            raise Invalid(f"extraneous key [{key}] is not permitted")
    flags = body.get("anthropic_beta", [])
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        raise Invalid("anthropic_beta: must be a list of strings")
    for f in flags:
        if f not in betas.BEDROCK_BETAS:
            raise Invalid(f"invalid beta flag: {f}")
    if not isinstance(body.get("max_tokens"), int):
        raise Invalid("max_tokens: field required")
    if "context_management" in body and "context-management-2025-06-27" not in flags:
        raise Invalid("context_management: Extra inputs are not permitted")
    oc = body.get("output_config")
    if isinstance(oc, dict) and "effort" in oc and "effort-2025-11-24" not in flags:
        raise Invalid("output_config.effort: Extra inputs are not permitted")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise Invalid("messages: field required")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise Invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")


def check_converse(body: dict[str, Any], counting: bool = False) -> None:
    """Refuse a Converse request the way Bedrock does."""
    extra = set(body) - CONVERSE_KEYS
    if extra:
        raise Invalid(f"extraneous key [{sorted(extra)[0]}] is not permitted")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise Invalid("The messages field is required.")
    if msgs[0].get("role") != "user":
        raise Invalid("A conversation must start with a user message. Try again with a conversation that starts with a user message.")
    prev_tool_ids: set[str] = set()
    uses_tools = False
    for i, m in enumerate(msgs):
        if i and m.get("role") == msgs[i - 1].get("role"):
            raise Invalid("A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.")
        content = m.get("content")
        if not isinstance(content, list) or not content:
            raise Invalid(f"The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again.")
        ids: set[str] = set()
        for j, block in enumerate(content):
            if not isinstance(block, dict) or len(block) != 1 or next(iter(block)) not in BLOCK_KEYS:
                raise Invalid(f"messages.{i}.content.{j}: a ContentBlock must hold exactly one member")
            kind, value = next(iter(block.items()))
            if kind == "text" and not str(value).strip():
                raise Invalid(f"The text field in the ContentBlock object at messages.{i}.content.{j} is blank. Add text to the text field, and try again.")
            if kind == "toolUse":
                uses_tools = True
                if not _NAME.match(str(value.get("name", ""))) or not _NAME.match(str(value.get("toolUseId", ""))):
                    raise Invalid(f"messages.{i}.content.{j}.toolUse: name and toolUseId must match [a-zA-Z0-9_-]{{1,64}}")
                ids.add(value["toolUseId"])
            if kind == "toolResult":
                uses_tools = True
                if value.get("toolUseId") not in prev_tool_ids:
                    raise Invalid(f"messages.{i}.content.{j}: the toolResult {value.get('toolUseId')!r} answers no toolUse of the previous turn")
                if value.get("status") not in (None, "success", "error"):
                    raise Invalid(f"messages.{i}.content.{j}.toolResult.status must be success or error")
            if kind == "image" and value.get("format") not in ("png", "jpeg", "gif", "webp"):
                raise Invalid(f"messages.{i}.content.{j}.image.format is not supported")
        prev_tool_ids = ids if m.get("role") == "assistant" else set()
    tc = body.get("toolConfig")
    if uses_tools and not tc and not counting:
        raise Invalid("The toolConfig field must be defined when using toolUse and toolResult content blocks.")
    if tc:
        for t in tc.get("tools", []):
            spec = t.get("toolSpec")
            if spec is not None and not _NAME.match(str(spec.get("name", ""))):
                raise Invalid(f"toolConfig.tools: the name {spec.get('name')!r} must match [a-zA-Z0-9_-]{{1,64}}")
        choice = tc.get("toolChoice")
        if choice is not None and (len(choice) != 1 or next(iter(choice)) not in ("auto", "any", "tool")):
            raise Invalid("toolConfig.toolChoice must be one of auto, any or tool")


# ---------------------------------------------------------------- for tests


def clean_aws_env(monkeypatch: MonkeyPatch, tmp_path: Path, keys: AwsKeys | None) -> None:
    """No AWS setting of the developer leaks in; `keys` (if any) are exported."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "aws-home"))
    if keys is not None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys.access_key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys.secret_access_key)
        if keys.session_token:
            monkeypatch.setenv("AWS_SESSION_TOKEN", keys.session_token)


def bedrock_config(url: str, extra: str = "") -> str:
    """Config text with one Bedrock provider pointed at the fake."""
    return f'[[providers]]\nname = "bedrock"\ntype = "bedrock"\nbase_url = "{url}"\nregion = "us-east-1"\n{extra}'


@asynccontextmanager
async def bedrock_sidecar(fake: FakeBedrock, home: Path, extra: str = "") -> AsyncIterator[InProcessSidecar]:
    """A sidecar whose only provider is the fake Bedrock."""
    async with sidecar_in_process(bedrock_config(fake.url, extra), home) as sc:
        yield sc
