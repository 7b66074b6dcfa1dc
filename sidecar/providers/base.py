"""The one interface every provider adapter implements, and the pieces adapters share.

A provider turns one *attempt* (the canonical Anthropic request, the upstream model to
use, the credential to use) into a `Call`: an opened upstream exchange whose status and
headers are known and whose body, read or streamed, is always Anthropic. The proxy relays
a Call to the client the same way whatever the provider; the router may drop a Call and
try the next target as long as nothing has reached the client.

Adapters that speak Anthropic (anthropic, bedrock-invoke, vertex) hand bytes through;
adapters that translate (openai, gemini, bedrock-converse) implement a `Codec` and get
their Call from `TranslatedCall`.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import msgspec
import yarl
from multidict import CIMultiDictProxy

from sidecar.errors import (
    InvalidRequest,
    StreamBroken,
    UpstreamBadAnswer,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from sidecar.net import upstream_proxy
from sidecar.pipeline import RequestContext
from sidecar.protocol import sse
from sidecar.providers import h1
from sidecar.providers.config import ProviderConfig
from sidecar.providers.h1 import H1Pool, H1Response
from sidecar.providers.heads import UnsafeHead, check_fields, safe_target
from sidecar.secrets import ResolvedKey

log = logging.getLogger(__name__)

UpstreamResponse = aiohttp.ClientResponse | H1Response

# Upstream response headers that are worth passing on from a translating provider.
KEEP_DOWN = ("retry-after", "request-id", "x-request-id")


@dataclass(slots=True)
class Attempt:
    """One try at one target: what the router hands a provider. It carries the request as
    the stages left it, never the request's (mutable) context."""

    method: str
    path_qs: str  # the client's path and query as the client encoded them, e.g. /v1/messages?beta=true
    headers: CIMultiDictProxy[str]  # the client's request headers
    body: bytes = b""  # the request body (a policy may have changed it)
    requested_model: str | None = None  # the client's model
    stream: bool = False  # the client asked for SSE
    count_tokens: bool = False  # a `count_tokens` call
    model: str | None = None  # the upstream model; None means the client's own
    key: ResolvedKey | None = None  # the credential to inject; None forwards the client's
    options: dict[str, Any] = field(default_factory=dict)  # per-target extras from the route
    decoded: Callable[[], dict[str, Any]] | None = field(default=None, repr=False)  # the body, decoded once
    foreign_free: bool = False  # the body is known to hold no other provider's thinking block

    @classmethod
    def of(cls, ctx: RequestContext, model: str | None = None, key: ResolvedKey | None = None) -> Attempt:
        """An attempt at `ctx` (its body decoded at most once for all attempts)."""
        return cls(
            ctx.method, ctx.path_qs, ctx.headers, ctx.body, ctx.head.model, ctx.stream, ctx.count_tokens,
            model, key, decoded=ctx.json, foreign_free=not ctx.body_replaced and ctx.head.foreign_free(),
        )  # fmt: skip

    @property
    def upstream_model(self) -> str | None:
        """The model this attempt asks the upstream for."""
        return self.model or self.requested_model

    def json(self) -> dict[str, Any]:
        """The request body as a dict; raises InvalidRequest when it is not a JSON object."""
        if self.decoded is not None:
            return self.decoded()
        try:
            obj = msgspec.json.decode(self.body)
        except (msgspec.DecodeError, RecursionError):
            raise InvalidRequest("the request body is not a valid JSON object") from None
        if not isinstance(obj, dict):
            raise InvalidRequest("the request body must be a JSON object")
        return obj


class Call(abc.ABC):
    """An opened upstream exchange; everything it yields is Anthropic."""

    status: int = 0
    stream: bool = False  # the body is Anthropic SSE
    request_id: str | None = None
    headers: list[tuple[str, str]]  # response headers for the client (hop-by-hop removed)
    translated: bool = False

    @abc.abstractmethod
    async def read(self) -> bytes:
        """The whole body (Anthropic JSON); raises UpstreamTimeout / UpstreamUnavailable."""

    @abc.abstractmethod
    def chunks(self) -> AsyncIterator[bytes]:
        """The body as Anthropic SSE bytes as they come; raises StreamBroken on a failure."""

    @abc.abstractmethod
    def close(self) -> None:
        """Abandon the exchange (the connection is not reused)."""

    @abc.abstractmethod
    def release(self) -> None:
        """The body was consumed; the connection may be reused."""


class Provider(Protocol):
    """A provider adapter."""

    name: str
    type: str
    cfg: ProviderConfig
    keys: list[ResolvedKey]

    @property
    def injects_keys(self) -> bool:
        """True when the sidecar supplies the credential instead of the client."""

    async def send(self, attempt: Attempt) -> Call:
        """Send a messages or count_tokens request; raise UpstreamError before any answer."""

    def close(self) -> None:
        """Close pooled connections."""


class Transport:
    """HTTP to one upstream: the lean HTTP/1.1 client for direct connections, aiohttp
    when an HTTP(S) proxy is configured for the upstream's host."""

    def __init__(self, cfg: ProviderConfig, session: aiohttp.ClientSession, base_url: str | None = None) -> None:
        self.name = cfg.name
        self.base_url = (base_url or cfg.base_url).rstrip("/")
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=cfg.connect_timeout, sock_read=cfg.read_timeout)
        self.proxy = upstream_proxy(self.base_url)
        self.h1 = None if self.proxy else H1Pool(self.base_url, cfg.connect_timeout, cfg.read_timeout)

    async def request(self, method: str, path_qs: str, headers: list[tuple[str, str]], body: bytes) -> UpstreamResponse:
        """Send one request (path relative to the base URL); return once the final answer's
        headers arrived. A head that cannot be sent safely is an InvalidRequest (nothing sent)."""
        try:
            if self.h1 is not None:
                up: UpstreamResponse = await self.h1.request(method, path_qs, headers, body)
            else:
                check_fields(headers)
                up = await self.session.request(
                    method,
                    yarl.URL(self.base_url + safe_target(path_qs), encoded=True),
                    data=body or None,
                    headers=headers,
                    timeout=self.timeout,
                    allow_redirects=False,
                    proxy=self.proxy,
                )
        except UnsafeHead as e:
            raise InvalidRequest(f"the request cannot be sent upstream: {e}") from None
        except h1.UpstreamBadAnswer as e:
            raise UpstreamBadAnswer(f"upstream {self.name} ({self.base_url}): {e}") from None
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
            raise UpstreamTimeout(f"upstream {self.name} ({self.base_url}) did not answer in time: {e or 'timeout'}") from None
        except (aiohttp.ClientError, OSError) as e:
            raise UpstreamUnavailable(f"cannot reach upstream {self.name} ({self.base_url}): {e}") from None
        if up.status < 200:
            # aiohttp skips 100-199 but hands back a 101; a switch of protocols is no answer.
            up.close()
            raise UpstreamBadAnswer(f"upstream {self.name} ({self.base_url}) answered HTTP {up.status} instead of a final answer")
        return up

    def close(self) -> None:
        """Close pooled connections."""
        if self.h1 is not None:
            self.h1.close()


async def read_body(up: UpstreamResponse, name: str) -> bytes:
    """Read a whole upstream body, mapping failures to the sidecar's upstream errors. An answer
    cut short is an UpstreamBadAnswer, never a body passed on as if it were whole."""
    try:
        body = await up.read()
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        up.close()
        if isinstance(e, TimeoutError):
            raise UpstreamTimeout(f"upstream {name} stalled while sending its response") from None
        raise UpstreamBadAnswer(f"upstream {name} broke off its response: {e}") from None
    if _close_delimited(up) and "json" in up.headers.get("content-type", ""):
        # Nothing but the end of the connection marks the end of this body, and a connection
        # that broke looks the same: only a whole JSON document shows the answer is complete.
        try:
            msgspec.json.decode(body)
        except msgspec.DecodeError:
            raise UpstreamBadAnswer(f"upstream {name} ended its connection before its JSON answer was complete") from None
    return body


def _close_delimited(up: UpstreamResponse) -> bool:
    """True when only the end of the connection delimits the body (no length, not chunked)."""
    h = up.headers
    return "content-length" not in h and "chunked" not in h.get("transfer-encoding", "").lower() and up.status not in (204, 304)


class StreamTranslator(Protocol):
    """Turns a provider's streamed body into Anthropic SSE events, incrementally."""

    def feed(self, chunk: bytes) -> list[tuple[str, dict[str, Any]]]:
        """Consume raw upstream bytes (any boundaries); return the Anthropic events completed."""

    def end(self) -> list[tuple[str, dict[str, Any]]]:
        """The upstream ended its body: the closing events, or raise StreamBroken when the
        stream was cut (e.g. mid tool arguments, or no finish reason at all)."""


class Codec(Protocol):
    """The translation half of a translating provider (pure: no IO)."""

    def build(self, attempt: Attempt, body: dict[str, Any], stream: bool) -> tuple[str, str, list[tuple[str, str]], bytes]:
        """The upstream request for the Anthropic `body`: method, path+query, headers, body bytes."""

    def message(self, body: bytes, requested_model: str) -> dict[str, Any]:
        """A non-streaming upstream answer as an Anthropic message (model echoed as requested)."""

    def stream(self, requested_model: str) -> StreamTranslator:
        """A fresh stream translator for one response."""

    def error(self, status: int, body: bytes) -> tuple[int, str, str]:
        """An upstream error answer as (status, Anthropic error type, message)."""


def error_envelope(error_type: str, message: str) -> bytes:
    """The Anthropic error body."""
    return msgspec.json.encode({"type": "error", "error": {"type": error_type, "message": message}})


def pick_headers(up: UpstreamResponse, keep: tuple[str, ...] = KEEP_DOWN) -> list[tuple[str, str]]:
    """The upstream response headers a translated answer passes on."""
    return [(k, v) for k in keep for v in up.headers.getall(k, [])]


class TranslatedCall(Call):
    """A Call whose upstream speaks another protocol: errors, messages and streams are
    translated to Anthropic by the provider's Codec as they pass."""

    translated = True

    def __init__(self, up: UpstreamResponse, codec: Codec, name: str, requested_model: str, stream: bool) -> None:
        self.up = up
        self.codec = codec
        self.name = name
        self.requested_model = requested_model
        self.status = up.status
        self.request_id = up.headers.get("x-request-id") or up.headers.get("request-id")
        self.headers = pick_headers(up)
        ctype = up.headers.get("content-type", "")
        self.stream = stream and up.status < 400 and "json" not in ctype
        self._error: bytes | None = None

    async def prepare_error(self) -> None:
        """Read and translate an error answer now (the router decides on it before any byte)."""
        if self.status >= 400 and self._error is None:
            raw = await read_body(self.up, self.name)
            self.up.release()
            status, etype, message = self.codec.error(self.status, raw)
            self.status = status
            self._error = error_envelope(etype, message)

    async def read(self) -> bytes:
        """The answer as Anthropic JSON (a message, or the error envelope)."""
        if self.status >= 400 or self._error is not None:
            await self.prepare_error()
            assert self._error is not None
            return self._error
        raw = await read_body(self.up, self.name)
        self.up.release()
        try:
            msg = self.codec.message(raw, self.requested_model)
        except (ValueError, KeyError, TypeError, msgspec.DecodeError) as e:
            self.status = 502
            return error_envelope("api_error", f"claude-sidecar: upstream {self.name} sent an answer that cannot be read: {e}")
        return msgspec.json.encode(msg)

    async def chunks(self) -> AsyncIterator[bytes]:
        """Anthropic SSE bytes, translated as the upstream's bytes arrive."""
        tr = self.codec.stream(self.requested_model)
        try:
            async for chunk in self.up.content.iter_any():
                events = tr.feed(chunk)
                if events:
                    yield b"".join(sse.encode(n, d) for n, d in events)
            events = tr.end()
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as e:
            self.up.close()
            raise StreamBroken(f"upstream {self.name} failed mid-stream: {e!r}") from None
        except (ValueError, KeyError, TypeError, msgspec.DecodeError) as e:
            self.up.close()
            raise StreamBroken(f"upstream {self.name} sent a stream that cannot be read: {e!r}") from None
        self.up.release()
        if events:
            yield b"".join(sse.encode(n, d) for n, d in events)

    def close(self) -> None:
        """Abandon the upstream connection."""
        self.up.close()

    def release(self) -> None:
        """Return the connection to the pool."""
        self.up.release()


class StaticCall(Call):
    """An answer made by the sidecar itself (a local token count, a replay)."""

    def __init__(
        self, body: bytes, status: int = 200, headers: list[tuple[str, str]] | None = None, request_id: str | None = None
    ) -> None:
        self.body = body
        self.status = status
        self.headers = headers or [("content-type", "application/json")]
        self.request_id = request_id

    async def read(self) -> bytes:
        """The body."""
        return self.body

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body in one piece."""
        yield self.body

    def close(self) -> None:
        """Nothing to close."""

    def release(self) -> None:
        """Nothing to release."""
