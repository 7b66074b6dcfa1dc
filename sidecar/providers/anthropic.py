"""The Anthropic passthrough: body bytes up, status, headers and SSE bytes back, untouched.

The only change a request may see is its `model` field, when a route sends it to another
model than the client asked for. Retries never happen here (the router owns them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import msgspec
from multidict import CIMultiDictProxy

from sidecar.errors import StreamBroken
from sidecar.protocol import foreign
from sidecar.providers.base import (
    Attempt,
    Call,
    Transport,
    UpstreamResponse,
    read_body,
)
from sidecar.providers.config import ProviderConfig
from sidecar.secrets import ResolvedKey

# Never forwarded upstream: hop-by-hop headers (RFC 9110 7.6.1; also every Proxy-* one and
# whatever the client's Connection header names), Expect (the sidecar sends the body at once,
# and the interim answer it asks for is the sidecar's to give), what aiohttp recomputes, the
# sidecar's own control headers, and browser headers (a browser request was refused at ingress).
_DROP_UP = frozenset(
    {
        "host", "content-length", "connection", "keep-alive", "proxy-connection",
        "proxy-authorization", "proxy-authenticate", "te", "trailer", "trailers",
        "transfer-encoding", "upgrade", "expect", "accept-encoding", "origin", "cookie",
        # aiohttp has already decoded a compressed request body; what we send is plain.
        "content-encoding",
    }
)
_AUTH = frozenset({"x-api-key", "authorization"})
# Not copied back: hop-by-hop, and what aiohttp sets for the body it sends (we decompress).
DROP_DOWN = frozenset(
    {
        "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "upgrade", "trailer",
        "te", "proxy-connection", "proxy-authenticate",
    }
)


def connection_named(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """The (lower-case) header names a Connection header declares hop-by-hop."""
    if "connection" not in headers:
        return frozenset()
    return frozenset(t.strip().lower() for v in headers.getall("connection") for t in v.split(","))


# The upstream headers made from a client's headers, by those headers but Content-Length (the
# one a client changes from turn to turn) and the injected key. Bounded; emptied when full.
UPSTREAM_MEMO_MAX = 256
_upstream: dict[tuple[tuple[tuple[str, str], ...], str | None], tuple[tuple[str, str], ...]] = {}


def upstream_headers(client: CIMultiDictProxy[str], key: ResolvedKey | None) -> list[tuple[str, str]]:
    """The client's headers as they go upstream: same names, values and order, minus hop-by-hop;
    the client's credentials are replaced by `key` when the sidecar injects one."""
    sig = (tuple([kv for kv in client.items() if kv[0].lower() != "content-length"]), None if key is None else key.value)
    out = _upstream.get(sig)
    if out is None:
        out = tuple(_upstream_headers(client, key))
        if len(_upstream) >= UPSTREAM_MEMO_MAX:
            _upstream.clear()
        _upstream[sig] = out
    return list(out)


def _upstream_headers(client: CIMultiDictProxy[str], key: ResolvedKey | None) -> list[tuple[str, str]]:
    named = connection_named(client)
    out = [
        (name, value)
        for name, value in client.items()
        if not (
            (low := name.lower()) in _DROP_UP
            or low.startswith(("x-sidecar-", "proxy-"))
            or low in named
            or (key is not None and low in _AUTH)
        )
    ]
    if key is not None:
        out.append(("x-api-key", key.value))
    return out


def with_model(body: bytes, model: str) -> bytes:
    """`body` with its `model` field set to `model` (the only rewrite a passthrough makes)."""
    obj = msgspec.json.decode(body)
    obj["model"] = model
    return msgspec.json.encode(obj)


class PassthroughCall(Call):
    """An Anthropic upstream's answer, bytes untouched."""

    def __init__(self, up: UpstreamResponse, name: str) -> None:
        self.up = up
        self.name = name
        self.status = up.status
        self.request_id = up.headers.get("request-id")
        named = connection_named(up.headers)
        self.headers = [(k, v) for k, v in up.headers.items() if (low := k.lower()) not in DROP_DOWN and low not in named]
        self.stream = up.headers.get("content-type", "").startswith("text/event-stream")

    async def read(self) -> bytes:
        """The whole body."""
        body = await read_body(self.up, self.name)
        self.up.release()
        return body

    async def chunks(self) -> AsyncIterator[bytes]:
        """The SSE bytes as they arrive."""
        try:
            async for chunk in self.up.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as e:
            self.up.close()
            raise StreamBroken(f"upstream {self.name} failed mid-stream: {e!r}") from None
        self.up.release()

    def close(self) -> None:
        """Abandon the connection."""
        self.up.close()

    def release(self) -> None:
        """Return the connection to the pool."""
        self.up.release()


class AnthropicProvider:
    """Sends a canonical (Anthropic) request to an Anthropic-speaking upstream."""

    type = "anthropic"

    def __init__(self, cfg: ProviderConfig, keys: list[ResolvedKey], session: aiohttp.ClientSession) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.keys = keys
        self.transport = Transport(cfg, session)

    @property
    def injects_keys(self) -> bool:
        """True when the sidecar supplies the credential instead of the client."""
        return bool(self.keys)

    async def send(self, attempt: Attempt) -> Call:
        """Send the request upstream; return once the answer's headers arrived."""
        body = attempt.body
        if body and not attempt.foreign_free:
            body = foreign.scrub(body) or body
        if attempt.model and attempt.model != attempt.requested_model and body:
            body = with_model(body, attempt.model)
        headers = upstream_headers(attempt.headers, attempt.key)
        up = await self.transport.request(attempt.method, attempt.path_qs, headers, body if attempt.method != "GET" else b"")
        return PassthroughCall(up, self.name)

    def close(self) -> None:
        """Close pooled upstream connections."""
        self.transport.close()
