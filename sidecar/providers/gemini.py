"""The Gemini API (generativelanguage.googleapis.com): generateContent, streamGenerateContent
(SSE), countTokens and the model list, with Anthropic in and Anthropic out.

Config (`[[providers]]`, type `gemini`): `api_version` (default "v1beta"; a `base_url` that
already ends in a version is used as is) and `headers` (extra request headers). The key is
sent as `x-goog-api-key`; the client's Anthropic credentials and `anthropic-beta` flags are
consumed here and never forwarded. Translation lives in `sidecar.protocol.gemini*`.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import msgspec

from sidecar.errors import ConfigError, InvalidRequest
from sidecar.protocol import gemini_response
from sidecar.protocol.gemini import build_count_request, build_request, model_path
from sidecar.protocol.gemini_tools import ToolNames
from sidecar.providers.base import (
    Attempt,
    Call,
    StreamTranslator,
    TranslatedCall,
    Transport,
    error_envelope,
    read_body,
)
from sidecar.providers.config import ProviderConfig
from sidecar.secrets import ResolvedKey

DEFAULT_API_VERSION = "v1beta"
_VERSION_RE = re.compile(r"^v\d+(?:alpha|beta)?\d*$")


class GeminiCodec:
    """The translation of one request (it keeps the tool-name aliases for the answer)."""

    def __init__(self, prefix: str, kind: str, headers: list[tuple[str, str]]) -> None:
        self.prefix = prefix  # "/v1beta", or "" when the base URL carries the version
        self.kind = kind  # messages | count | models
        self.headers = headers
        self.names = ToolNames()
        self.upstream_model = ""

    def build(self, attempt: Attempt, body: dict[str, Any], stream: bool) -> tuple[str, str, list[tuple[str, str]], bytes]:
        """Method, path, headers and body of the Gemini request for `attempt`."""
        if self.kind == "models":
            return "GET", f"{self.prefix}/models?pageSize=1000", self.headers, b""
        model = attempt.upstream_model
        if not model:
            raise InvalidRequest("the request names no model, and the route gives Gemini none")
        self.upstream_model = model.removeprefix("models/")
        path = f"{self.prefix}/{model_path(model)}"
        if self.kind == "count":
            payload = build_count_request(body, self.upstream_model, self.names)
            return "POST", path + ":countTokens", self.headers, msgspec.json.encode(payload)
        payload = build_request(body, self.upstream_model, self.names)
        action = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
        return "POST", path + action, self.headers, msgspec.json.encode(payload)

    def message(self, body: bytes, requested_model: str) -> dict[str, Any]:
        """The answer as Anthropic JSON: a message, a token count or a model list."""
        if self.kind == "count":
            return {"input_tokens": _count(body)}
        if self.kind == "models":
            return _models(body)
        return gemini_response.message(body, requested_model, self.names)

    def stream(self, requested_model: str) -> StreamTranslator:
        """A translator for one streamed answer."""
        return gemini_response.StreamTranslator(requested_model, self.names)

    def error(self, status: int, body: bytes) -> tuple[int, str, str]:
        """A Gemini error answer as (status, Anthropic error type, message)."""
        status, etype, message = gemini_response.map_error(status, body)
        if self.kind == "count" and status == 404:
            # A 404 on count_tokens makes Claude Code fall back to billable max_tokens:1 calls.
            return 400, "invalid_request_error", f"Gemini cannot count tokens for {self.upstream_model!r}: {message}"
        return status, etype, message


class GeminiCall(TranslatedCall):
    """A translated Gemini answer; a RetryInfo delay in an error body becomes `retry-after`."""

    async def prepare_error(self) -> None:
        """Read and translate an error answer (once)."""
        if self.status < 400 or self._error is not None:
            return
        raw = await read_body(self.up, self.name)
        self.up.release()
        delay = gemini_response.retry_after(raw)
        if delay is not None and not any(k.lower() == "retry-after" for k, _ in self.headers):
            self.headers.append(("retry-after", str(delay)))
        status, etype, message = self.codec.error(self.status, raw)
        self.status = status
        self._error = error_envelope(etype, message)


class GeminiProvider:
    """Sends Anthropic requests to the Gemini API, translated both ways."""

    type = "gemini"

    def __init__(self, cfg: ProviderConfig, keys: list[ResolvedKey], session: aiohttp.ClientSession) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.keys = keys
        version = cfg.options.get("api_version", DEFAULT_API_VERSION)
        if not isinstance(version, str) or not _VERSION_RE.match(version):
            raise ConfigError(f"provider {cfg.name!r}: api_version {version!r} is not like v1, v1beta or v1alpha")
        base = cfg.base_url.rstrip("/")
        self.prefix = "" if re.search(r"/v\d+(?:alpha|beta)?\d*$", base) else f"/{version}"
        extra = cfg.options.get("headers", {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
            raise ConfigError(f"provider {cfg.name!r}: headers must map names to strings")
        self.extra_headers = list(extra.items())
        self.transport = Transport(cfg, session)

    @property
    def injects_keys(self) -> bool:
        """Always the sidecar's key: Claude Code's Anthropic credentials mean nothing to Google."""
        return True

    async def send(self, attempt: Attempt) -> Call:
        """Send a messages, count_tokens or model-list request; return once Gemini answered."""
        kind = "models" if attempt.method == "GET" else "count" if attempt.count_tokens else "messages"
        key = attempt.key or (self.keys[0] if self.keys else None)
        if key is None:
            raise InvalidRequest(
                f"provider {self.name!r} (Gemini) has no API key: run `claude-sidecar keys set {self.name}` "
                f"or set CLAUDE_SIDECAR_{self.name.upper().replace('-', '_')}_API_KEY"
            )
        headers = [("content-type", "application/json"), ("x-goog-api-key", key.value), *self.extra_headers]
        codec = GeminiCodec(self.prefix, kind, headers)
        stream = kind == "messages" and attempt.stream
        body = attempt.json() if kind != "models" else {}
        method, path, up_headers, data = codec.build(attempt, body, stream)
        up = await self.transport.request(method, path, up_headers, data)
        requested = attempt.requested_model or codec.upstream_model
        call = GeminiCall(up, codec, self.name, requested, stream)
        if call.status >= 400:
            await call.prepare_error()
        return call

    def close(self) -> None:
        """Close pooled connections."""
        self.transport.close()


def _count(body: bytes) -> int:
    obj = msgspec.json.decode(body)
    total = obj.get("totalTokens") if isinstance(obj, dict) else None
    if not isinstance(total, int) or isinstance(total, bool):
        raise ValueError("countTokens answered without totalTokens")
    return total


def _models(body: bytes) -> dict[str, Any]:
    obj = msgspec.json.decode(body)
    data = []
    for m in obj.get("models", []) if isinstance(obj, dict) else []:
        if not isinstance(m, dict) or "generateContent" not in m.get("supportedGenerationMethods", ["generateContent"]):
            continue
        name = str(m.get("name", "")).removeprefix("models/")
        if name:
            data.append({"type": "model", "id": name, "display_name": str(m.get("displayName") or name), "created_at": "1970-01-01T00:00:00Z"})
    return {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}
