"""The `openai` and `openai-compatible` providers: Anthropic Messages in, Chat Completions
upstream, Anthropic back (JSON or SSE).

One adapter serves api.openai.com and the servers that copy its API (vLLM, Ollama,
OpenRouter, DeepSeek, Groq, ...); what differs between them is in `Quirks`, chosen by the
provider's `preset` and `quirks` table. The client's own credentials never go upstream:
the provider's key is sent as `Authorization: Bearer`, or nothing when it has none (local
servers). count_tokens is answered locally with a real tokenizer; `GET /v1/models` lists
the upstream's models in Anthropic's shape.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import aiohttp
import msgspec

from sidecar import __version__
from sidecar.errors import InvalidRequest
from sidecar.protocol.openai import (
    ChatStream,
    ToolNames,
    read_options,
    translate_error,
    translate_message,
    translate_request,
)
from sidecar.protocol.openai.quirks import Quirks
from sidecar.providers import tokens
from sidecar.providers.base import (
    Attempt,
    Call,
    StaticCall,
    TranslatedCall,
    Transport,
    error_envelope,
    read_body,
)
from sidecar.providers.config import ProviderConfig
from sidecar.secrets import ResolvedKey

log = logging.getLogger(__name__)

CHAT_PATH = "/chat/completions"
_JSON = [("content-type", "application/json")]
_encode = msgspec.json.Encoder().encode


class ChatCodec:
    """The translation of one request and its answer (a Codec): it remembers the tool names
    and stop sequences of the request it built, to read the answer back."""

    def __init__(self, quirks: Quirks, extra_headers: tuple[tuple[str, str], ...], input_estimate: int = 0) -> None:
        self.quirks = quirks
        self.extra_headers = extra_headers
        self.input_estimate = input_estimate
        self.names = ToolNames()
        self.stops: list[str] = []

    def build(self, attempt: Attempt, body: dict[str, Any], stream: bool) -> tuple[str, str, list[tuple[str, str]], bytes]:
        """The Chat Completions request for the Anthropic `body`."""
        model = attempt.upstream_model
        if not model:
            raise InvalidRequest("model: the request names no model and the route sets none")
        chat, self.names = translate_request(body, model, self.quirks, stream)
        stops = body.get("stop_sequences")
        self.stops = list(stops) if isinstance(stops, list) else []
        headers = [
            ("content-type", "application/json"),
            ("accept", "text/event-stream" if stream else "application/json"),
            ("user-agent", f"claude-sidecar/{__version__}"),
        ]
        if attempt.key is not None:
            headers.append(("authorization", f"Bearer {attempt.key.value}"))
        headers.extend(self.extra_headers)
        return "POST", CHAT_PATH, headers, _encode(chat)

    def message(self, body: bytes, requested_model: str) -> dict[str, Any]:
        """A non-streaming answer as an Anthropic message."""
        return translate_message(body, requested_model, self.names, self.stops)

    def stream(self, requested_model: str) -> ChatStream:
        """A translator for one streamed answer."""
        return ChatStream(requested_model, self.names, self.stops, self.input_estimate)

    def error(self, status: int, body: bytes) -> tuple[int, str, str]:
        """An error answer as (status, Anthropic error type, message)."""
        return translate_error(status, body)


async def estimate_tokens(body: dict[str, Any]) -> int:
    """The local token estimate of `body`, computed off the event loop. Should the bundled
    tokenizer be broken, a bytes-based estimate is returned and the install is reported."""
    try:
        return await asyncio.to_thread(tokens.count_request, body)
    except tokens.TokenizerUnavailable as e:
        log.error("token counting falls back to the size estimate: %s", e)
        return tokens.estimate(_encode(body), lambda: body)


def chat_base_url(url: str) -> str:
    """The API root: a base URL given with the endpoint's path (a common slip) is trimmed."""
    return re.sub(r"/chat/completions/?$", "", url.rstrip("/"))


class OpenAIProvider:
    """Sends canonical (Anthropic) requests to an OpenAI Chat Completions server."""

    def __init__(self, cfg: ProviderConfig, keys: list[ResolvedKey], session: aiohttp.ClientSession) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.type = cfg.type
        self.keys = keys
        options = read_options(cfg.name, cfg.type, cfg.options)  # ConfigError names the bad key
        self.quirks = options.quirks
        self.extra_headers = options.headers
        self.transport = Transport(cfg, session, chat_base_url(cfg.base_url))

    @property
    def injects_keys(self) -> bool:
        """True when the sidecar supplies the credential (the client's is never forwarded)."""
        return bool(self.keys)

    async def send(self, attempt: Attempt) -> Call:
        """Translate and send one request; return once the upstream's headers arrived."""
        if attempt.method == "GET":
            return await self._models(attempt)
        body = attempt.json()
        if attempt.count_tokens:
            count = await estimate_tokens(body)
            return StaticCall(_encode({"input_tokens": count}), 200, [*_JSON, ("x-sidecar-token-count", "estimate")])
        # Without usage in the stream, the input is estimated so that metering is not zero.
        estimate = await estimate_tokens(body) if attempt.stream and not self.quirks.include_usage else 0
        codec = ChatCodec(self.quirks, self.extra_headers, estimate)
        method, path, headers, data = codec.build(attempt, body, attempt.stream)
        up = await self.transport.request(method, path, headers, data)
        requested = attempt.requested_model or attempt.upstream_model or ""
        return TranslatedCall(up, codec, self.name, requested, attempt.stream)

    async def _models(self, attempt: Attempt) -> Call:
        """`GET /v1/models`: the upstream's model list, as Anthropic lists models."""
        headers = [("accept", "application/json"), ("user-agent", f"claude-sidecar/{__version__}")]
        if attempt.key is not None:
            headers.append(("authorization", f"Bearer {attempt.key.value}"))
        headers.extend(self.extra_headers)
        up = await self.transport.request("GET", "/models", headers, b"")
        raw = await read_body(up, self.name)
        up.release()
        if up.status >= 400:
            status, etype, message = translate_error(up.status, raw)
            return StaticCall(error_envelope(etype, message), status, list(_JSON))
        return StaticCall(_encode(models_page(raw)), 200, list(_JSON))

    def close(self) -> None:
        """Close pooled upstream connections."""
        self.transport.close()


def models_page(raw: bytes) -> dict[str, Any]:
    """An OpenAI `{"object": "list", "data": [...]}` as Anthropic's model list page."""
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        obj = {}
    items = obj.get("data") if isinstance(obj, dict) else None
    data = []
    for m in items if isinstance(items, list) else []:
        if not isinstance(m, dict) or not isinstance(m.get("id"), str):
            continue
        created = m.get("created")
        stamp = time.gmtime(created if isinstance(created, int) else 0)
        data.append(
            {"type": "model", "id": m["id"], "display_name": m["id"], "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp)}
        )
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
