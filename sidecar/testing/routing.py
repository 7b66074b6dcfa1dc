"""Requests and config text for routing tests: a minimal Messages body, a [[routes]] entry,
and a POST through an in-process sidecar."""

from __future__ import annotations

import json

import aiohttp
from multidict import CIMultiDict

from sidecar.testing.harness import InProcessSidecar

HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01", "content-type": "application/json"}


def body(stream: bool = False, model: str = "claude-opus-4-8") -> bytes:
    """A minimal Messages request for `model`."""
    return json.dumps(
        {"model": model, "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()


def route(targets: str, fallbacks: str = "", extra: str = "", name: str = "main", match: str = 'model = "*"') -> str:
    """Config text of one [[routes]] entry."""
    fb = f"fallbacks = [{fallbacks}]\n" if fallbacks else ""
    return f'[[routes]]\nname = "{name}"\nmatch = {{ {match} }}\ntargets = [{targets}]\n{fb}{extra}\n'


async def post(client: aiohttp.ClientSession, sc: InProcessSidecar, stream: bool = False, headers: dict[str, str] | None = None, model: str = "claude-opus-4-8") -> tuple[int, CIMultiDict[str], bytes]:
    """POST `body()` to the sidecar: status, headers and the whole answer."""
    async with client.post(sc.url + "/v1/messages", data=body(stream, model), headers={**HEADERS, **(headers or {})}) as r:
        return r.status, CIMultiDict(r.headers), await r.read()


def no_retry_rounds() -> str:
    """Config text that turns off the rounds of retries after every target failed."""
    return "[routing.retry]\nrounds = 0\n"
