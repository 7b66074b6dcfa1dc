"""Amazon Bedrock: Claude through InvokeModel, other models through Converse.

Claude models (`anthropic.claude-...`, `us.anthropic.claude-...`, or any model when the
provider's `api = "invoke"`) get the Anthropic body with these changes only: `model` and
`stream` removed (they are in the path), `anthropic_version: "bedrock-2023-05-31"` added,
the client's `anthropic-beta` flags moved into the body's `anthropic_beta` list and filtered
to what Bedrock accepts (see `sidecar.providers.betas`, which also names the body fields a
dropped flag takes along). A streamed answer arrives as AWS event-stream `chunk` events
whose `bytes` are Anthropic event JSON: each goes to the client as the same SSE event, as
soon as it is decoded. An exception inside the stream (`throttlingException`,
`modelStreamErrorException`, ...) becomes an Anthropic `error` event; if it is the first
thing the stream says, the call is an ordinary error answer instead, so the router can
still retry or fall back. A corrupted or cut stream raises StreamBroken.

Other models (or `api = "converse"`) go through Converse / ConverseStream, translated by
`sidecar.protocol.bedrock_converse`. count_tokens uses Bedrock's CountTokens API. Model ids may be
ARNs or inference profiles: they are URL-encoded into the path and signed as sent.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import msgspec
import yarl

from sidecar.errors import StreamBroken, UpstreamTimeout, UpstreamUnavailable
from sidecar.protocol import bedrock_converse, sse
from sidecar.protocol.eventstream import EventStreamDecoder, EventStreamError, Message
from sidecar.providers import betas
from sidecar.providers.anthropic import PassthroughCall
from sidecar.providers.aws_auth import (
    AwsCredentialsError,
    CredentialChain,
    SigningInput,
    resolve_region,
    sign,
)
from sidecar.providers.base import (
    Attempt,
    Call,
    StaticCall,
    StreamTranslator,
    TranslatedCall,
    Transport,
    UpstreamResponse,
    error_envelope,
    read_body,
)
from sidecar.providers.config import ProviderConfig
from sidecar.secrets import ResolvedKey

log = logging.getLogger(__name__)

ANTHROPIC_VERSION = "bedrock-2023-05-31"
APIS = ("auto", "invoke", "converse")
SERVICE = "bedrock"
EVENTSTREAM = "application/vnd.amazon.eventstream"
JSON = "application/json"
# CountTokens answers these when it cannot count for a model (or a region lacks the API).
_NO_COUNTING = frozenset({"ValidationException", "ResourceNotFoundException", "UnknownOperationException"})
_STALE_CREDENTIALS = frozenset({"ExpiredTokenException", "UnrecognizedClientException", "InvalidSignatureException"})


def is_claude(model: str) -> bool:
    """True for a model id that names a Claude model (foundation model, profile or ARN)."""
    m = model.lower()
    return "anthropic." in m or "claude" in m


def model_path(model: str, action: str) -> str:
    """`/model/{id}/{action}` with the id percent-encoded (ARNs hold ':' and '/')."""
    return f"/model/{urllib.parse.quote(model, safe='')}/{action}"


def invoke_body(body: dict[str, Any], header_betas: list[str], allowed: frozenset[str]) -> dict[str, Any]:
    """The InvokeModel body for an Anthropic request (see the module docstring)."""
    flags = betas.parse([*header_betas, *betas.body_betas(body)])
    kept, dropped = betas.split(flags, allowed)
    out = betas.adapt(body, kept, dropped)
    for k in ("model", "stream", "anthropic_beta"):
        out.pop(k, None)
    out["anthropic_version"] = ANTHROPIC_VERSION
    if kept:
        out["anthropic_beta"] = kept
    return out


def _json_error(status: int, etype: str, message: str, request_id: str | None = None) -> StaticCall:
    headers = [("content-type", JSON)]
    if request_id:
        headers.append(("request-id", request_id))
    call = StaticCall(error_envelope(etype, message), status, headers)
    call.request_id = request_id
    return call


def _sidecar_error(status: int, etype: str, message: str) -> StaticCall:
    return _json_error(status, etype, f"claude-sidecar: {message}")


def _request_id(up: UpstreamResponse) -> str | None:
    return up.headers.get("x-amzn-RequestId") or up.headers.get("x-amzn-requestid")


def stream_exception(msg: Message) -> tuple[int, str, str]:
    """An `exception` or `error` message of an event stream as (status, error type, message)."""
    if msg.message_type == "error":
        text = str(msg.headers.get(":error-message") or msg.headers.get(":error-code") or "stream error")
        return 500, "api_error", text
    return bedrock_converse.map_error(500, bedrock_converse.error_code(msg.exception_type, None), msg.payload)


class BedrockStreamCall(Call):
    """InvokeModelWithResponseStream: event-stream `chunk`s re-emitted as Anthropic SSE."""

    stream = True

    def __init__(self, up: UpstreamResponse, name: str) -> None:
        self.up = up
        self.name = name
        self.status = up.status
        self.request_id = _request_id(up)
        self.headers = [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")]
        if self.request_id:
            self.headers.append(("request-id", self.request_id))
        self.decoder = EventStreamDecoder()
        self._it = up.content.iter_any().__aiter__()
        self._pending: list[Message] = []
        self._ended = False

    async def prime(self) -> Call:
        """Read up to the first message: an exception there becomes an error answer."""
        msgs: list[Message] = []
        while not msgs:
            try:
                chunk = await self._it.__anext__()
            except StopAsyncIteration:
                self.up.close()
                raise UpstreamUnavailable(f"upstream {self.name} ended its stream before any event") from None
            except (TimeoutError, aiohttp.ServerTimeoutError):
                self.up.close()
                raise UpstreamTimeout(f"upstream {self.name} stalled before its first event") from None
            except (aiohttp.ClientError, OSError) as e:
                self.up.close()
                raise UpstreamUnavailable(f"upstream {self.name} broke off before its first event: {e}") from None
            try:
                msgs = self.decoder.feed(chunk)
            except EventStreamError as e:
                self.up.close()
                raise UpstreamUnavailable(f"upstream {self.name} sent an unreadable event stream: {e}") from None
        if msgs[0].message_type != "event":
            self.up.close()
            status, etype, message = stream_exception(msgs[0])
            return _json_error(status, etype, message, self.request_id)
        self._pending = msgs
        return self

    def _sse(self, msgs: list[Message]) -> bytes:
        out: list[bytes] = []
        for msg in msgs:
            if self._ended:
                break
            if msg.message_type != "event":
                _, etype, message = stream_exception(msg)
                out.append(sse.encode("error", {"type": "error", "error": {"type": etype, "message": message}}))
                self._ended = True
            elif msg.event_type == "chunk":
                out.append(chunk_to_sse(msg.payload))
        return b"".join(out)

    async def chunks(self) -> AsyncIterator[bytes]:
        """Anthropic SSE bytes as each event-stream message is decoded."""
        try:
            first = self._sse(self._pending)
            self._pending = []
            if first:
                yield first
            async for chunk in self._it:
                out = self._sse(self.decoder.feed(chunk))
                if out:
                    yield out
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as e:
            self.up.close()
            raise StreamBroken(f"upstream {self.name} failed mid-stream: {e!r}") from None
        except (EventStreamError, ValueError, KeyError, TypeError) as e:
            self.up.close()
            raise StreamBroken(f"upstream {self.name} sent a stream that cannot be read: {e}") from None
        if self.decoder.partial:
            self.up.close()
            raise StreamBroken(f"upstream {self.name} ended its stream inside an event-stream message")
        self.up.release()

    async def read(self) -> bytes:
        """Not used for a stream (the relay reads chunks); the SSE body whole."""
        return b"".join([c async for c in self.chunks()])

    def close(self) -> None:
        """Abandon the connection."""
        self.up.close()

    def release(self) -> None:
        """Return the connection to the pool."""
        self.up.release()


def chunk_to_sse(payload: bytes) -> bytes:
    """One `chunk` event's payload (`{"bytes": base64 of Anthropic event JSON}`) as an SSE event.
    The event JSON goes out as Bedrock sent it, except that Bedrock's own
    `amazon-bedrock-invocationMetrics` (on message_stop) is removed."""
    raw = base64.b64decode(msgspec.json.decode(payload)["bytes"], validate=True)
    data = msgspec.json.decode(raw)
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ValueError("a chunk that is not an Anthropic event")
    if "amazon-bedrock-invocationMetrics" in data:
        del data["amazon-bedrock-invocationMetrics"]
        raw = msgspec.json.encode(data)
    elif b"\n" in raw or b"\r" in raw:
        raw = msgspec.json.encode(data)  # one SSE data line must not hold a line break
    name: str = data["type"]
    return b"event: " + name.encode() + b"\ndata: " + raw + b"\n\n"


class ConverseCodec:
    """The Converse translation for one request (it knows the request's shortened tool names)."""

    def __init__(self, names: bedrock_converse.ToolNames) -> None:
        self.names = names

    def build(self, attempt: Attempt, body: dict[str, Any], stream: bool) -> tuple[str, str, list[tuple[str, str]], bytes]:
        """The unsigned Converse request (BedrockProvider signs it); the tool names of this
        request replace the codec's."""
        req, self.names = bedrock_converse.to_converse(body)
        model = attempt.upstream_model or ""
        path = model_path(model, "converse-stream" if stream else "converse")
        return "POST", path, [("content-type", JSON), ("accept", EVENTSTREAM if stream else JSON)], msgspec.json.encode(req)

    def message(self, body: bytes, requested_model: str) -> dict[str, Any]:
        """A Converse answer as an Anthropic message."""
        return bedrock_converse.to_message(msgspec.json.decode(body), requested_model, self.names)

    def stream(self, requested_model: str) -> StreamTranslator:
        """A ConverseStream translator."""
        return bedrock_converse.ConverseStreamTranslator(requested_model, self.names)

    def error(self, status: int, body: bytes) -> tuple[int, str, str]:
        """An AWS error answer as an Anthropic one."""
        return bedrock_converse.map_error(status, None, body)


class BedrockProvider:
    """Sends Anthropic requests to Amazon Bedrock (SigV4 or a Bedrock API key)."""

    type = "bedrock"

    def __init__(
        self, cfg: ProviderConfig, keys: list[ResolvedKey], session: aiohttp.ClientSession,
        env: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.cfg = cfg
        self.name = cfg.name
        self.keys = keys
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.transport = Transport(cfg, session)
        profile = cfg.options.get("profile")
        self.chain = CredentialChain(session, profile, self.env)
        self.region = resolve_region(cfg.options, cfg.base_url, self.env, self.chain.profile)
        self.api = str(cfg.options.get("api", "auto"))
        # The config types options but not their values: a bad one is refused on each call.
        self.problem = None if self.api in APIS else f"provider {cfg.name}: api must be 'auto', 'invoke' or 'converse', not {self.api!r}"
        self.allowed_betas = betas.BEDROCK_BETAS | frozenset(str(b) for b in cfg.options.get("betas", []))
        self.cache_points = bool(cfg.options.get("cache_points", False))
        parts = urllib.parse.urlsplit(self.transport.base_url)
        default_port = (parts.scheme == "https" and parts.port in (None, 443)) or (parts.scheme == "http" and parts.port in (None, 80))
        self.host = (parts.hostname or "") if default_port else f"{parts.hostname}:{parts.port}"
        self.prefix = parts.path.rstrip("/")

    @property
    def injects_keys(self) -> bool:
        """Always: Bedrock is reached with the sidecar's AWS credentials, never the client's."""
        return True

    def uses_converse(self, model: str) -> bool:
        """True when `model` goes through Converse rather than InvokeModel."""
        return self.api == "converse" or (self.api == "auto" and not is_claude(model))

    async def send(self, attempt: Attempt) -> Call:
        """Send a messages or count_tokens request to Bedrock."""
        path = attempt.path_qs.split("?", 1)[0]
        if attempt.method != "POST" or path not in ("/v1/messages", "/v1/messages/count_tokens"):
            return _sidecar_error(404, "not_found_error", f"provider {self.name} (bedrock) does not serve {attempt.method} {path}")
        if self.problem is not None:
            return _sidecar_error(500, "api_error", self.problem)
        model = attempt.upstream_model
        if not model:
            return _sidecar_error(400, "invalid_request_error", "the request has no `model`")
        body = attempt.json()
        try:
            if attempt.count_tokens:
                return await self._count_tokens(attempt, model, body)
            if self.uses_converse(model):
                return await self._converse(attempt, model, body)
            return await self._invoke(attempt, model, body)
        except bedrock_converse.ConverseRequestError as e:
            return _sidecar_error(400, "invalid_request_error", str(e))

    # -- the three operations -------------------------------------------------------------

    def _invoke_payload(self, attempt: Attempt, body: dict[str, Any]) -> dict[str, Any]:
        return invoke_body(body, attempt.headers.getall("anthropic-beta", []), self.allowed_betas)

    async def _invoke(self, attempt: Attempt, model: str, body: dict[str, Any]) -> Call:
        stream = attempt.stream
        payload = msgspec.json.encode(self._invoke_payload(attempt, body))
        path = model_path(model, "invoke-with-response-stream" if stream else "invoke")
        headers = [("content-type", JSON), ("accept", EVENTSTREAM if stream else JSON)]
        if stream:
            headers.append(("x-amzn-bedrock-accept", JSON))
        up = await self._request(attempt, path, headers, payload)
        if up.status >= 400:
            return await self._error(up)
        if not stream:
            call = PassthroughCall(up, self.name)
            call.request_id = _request_id(up)
            return call
        return await BedrockStreamCall(up, self.name).prime()

    async def _converse(self, attempt: Attempt, model: str, body: dict[str, Any]) -> Call:
        stream = attempt.stream
        req, names = bedrock_converse.to_converse(body, cache_points=self.cache_points)
        path = model_path(model, "converse-stream" if stream else "converse")
        headers = [("content-type", JSON), ("accept", EVENTSTREAM if stream else JSON)]
        up = await self._request(attempt, path, headers, msgspec.json.encode(req))
        if up.status >= 400:
            return await self._error(up)
        call = TranslatedCall(up, ConverseCodec(names), self.name, attempt.requested_model or model, stream)
        call.request_id = _request_id(up)
        return call

    async def _count_tokens(self, attempt: Attempt, model: str, body: dict[str, Any]) -> Call:
        if self.uses_converse(model):
            req, _ = bedrock_converse.to_converse(body, cache_points=self.cache_points)
            inp = bedrock_converse.count_tokens_input(req)
        else:
            invoke = self._invoke_payload(attempt, body)
            invoke.setdefault("max_tokens", 1)  # InvokeModel requires it; it does not change the count
            inp = {"invokeModel": {"body": base64.b64encode(msgspec.json.encode(invoke)).decode()}}
        payload = msgspec.json.encode({"input": inp})
        up = await self._request(attempt, model_path(model, "count-tokens"), [("content-type", JSON), ("accept", JSON)], payload)
        if up.status >= 400:
            error = await self._error(up)
            code = bedrock_converse.error_code(up.headers.get("x-amzn-ErrorType"), None)
            if code in _NO_COUNTING:
                return self._estimate(body, model, error)
            return error
        raw = await read_body(up, self.name)
        up.release()
        try:
            n = int(msgspec.json.decode(raw)["inputTokens"])
        except (msgspec.DecodeError, KeyError, TypeError, ValueError) as e:
            return _sidecar_error(502, "api_error", f"upstream {self.name} sent a CountTokens answer that cannot be read: {e}")
        return StaticCall(msgspec.json.encode({"input_tokens": n}))

    def _estimate(self, body: dict[str, Any], model: str, refused: Call) -> Call:
        """A local count when Bedrock cannot count for `model` (never a billable call)."""
        from sidecar.providers import tokens  # loads a tokenizer: only when it is needed

        try:
            n = tokens.count_request(body)
        except tokens.TokenizerUnavailable as e:
            log.warning("provider %s: no local tokenizer for a count Bedrock refused: %s", self.name, e)
            return refused
        log.info("provider %s: Bedrock cannot count tokens for %s; answering a local estimate", self.name, model)
        return StaticCall(msgspec.json.encode({"input_tokens": n}), headers=[("content-type", JSON), ("x-sidecar-token-count", "estimate")])

    # -- HTTP and auth --------------------------------------------------------------------

    def wire_path(self, path: str) -> str:
        """The path exactly as it goes on the wire (the proxied client re-normalises it)."""
        if self.transport.h1 is not None:
            return self.prefix + path
        return yarl.URL(self.transport.base_url + path).raw_path

    async def auth_headers(self, attempt: Attempt, path: str, headers: list[tuple[str, str]], body: bytes) -> list[tuple[str, str]]:
        """`headers` plus the credentials: a Bedrock API key, else a SigV4 signature."""
        token = attempt.key.value if attempt.key is not None else self.env.get("AWS_BEARER_TOKEN_BEDROCK")
        if token:
            return [*headers, ("authorization", f"Bearer {token}")]
        if not self.region:
            raise AwsCredentialsError(
                f"provider {self.name}: no AWS region; set `region` in its config or AWS_REGION"
            )
        creds = await self.chain.get()
        req = SigningInput("POST", self.wire_path(path), "", [("host", self.host), *headers], body)
        return [*headers, *sign(req, creds, self.region, SERVICE, dt.datetime.now(dt.UTC))]

    async def _request(self, attempt: Attempt, path: str, headers: list[tuple[str, str]], body: bytes) -> UpstreamResponse:
        headers = await self.auth_headers(attempt, path, headers, body)
        return await self.transport.request("POST", path, headers, body)

    async def _error(self, up: UpstreamResponse) -> Call:
        raw = await read_body(up, self.name)
        up.release()
        code = bedrock_converse.error_code(up.headers.get("x-amzn-ErrorType"), None)
        status, etype, message = bedrock_converse.map_error(up.status, code, raw)
        if code in _STALE_CREDENTIALS:
            self.chain.invalidate()
        return _json_error(status, etype, message, _request_id(up))

    def close(self) -> None:
        """Close pooled upstream connections."""
        self.transport.close()

