"""A sidecar governed by a policy, and an upstream that holds its answers until released."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from sidecar.testing import anthropic_sse as sse
from sidecar.testing.fake_server import MessagesUpstream
from sidecar.testing.harness import InProcessSidecar, anthropic_config, sidecar_in_process

# Round prices for the model the tests use, so expected costs are easy to write down.
PRICES = """
[pricing."claude-opus-4-8"]
input = 5.0
output = 25.0
cache_read = 0.5
cache_write = 6.25
"""


@asynccontextmanager
async def governed(upstream_url: str, home: Path, policy: str) -> AsyncIterator[InProcessSidecar]:
    """An in-process sidecar pointed at `upstream_url` with `policy` (TOML) added."""
    async with sidecar_in_process(anthropic_config(upstream_url, PRICES + policy), home) as sc:
        yield sc


def body(text: str = "hi", *, stream: bool = True, max_tokens: int = 1000, model: str = "claude-opus-4-8", **extra: Any) -> dict[str, Any]:
    """A small Messages request."""
    return {"model": model, "max_tokens": max_tokens, "stream": stream, "messages": [{"role": "user", "content": text}], **extra}


async def post(client: aiohttp.ClientSession, sc: InProcessSidecar, payload: dict[str, Any], path: str = "/v1/messages") -> tuple[int, dict[str, str], bytes]:
    """POST `payload` to the sidecar; the status, headers and whole body."""
    async with client.post(sc.url + path, json=payload, headers={"x-api-key": "sk-ant-test"}) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def policy_state(client: aiohttp.ClientSession, sc: InProcessSidecar) -> dict[str, Any]:
    """GET /sidecar/v1/policy."""
    async with client.get(sc.url + "/sidecar/v1/policy", headers={"authorization": f"Bearer {sc.token}"}) as resp:
        assert resp.status == 200
        data: dict[str, Any] = await resp.json()
        return data


def error_message(raw: bytes) -> str:
    """The message of an Anthropic error envelope."""
    env = json.loads(raw)
    assert env["type"] == "error", env
    return str(env["error"]["message"])


class HeldUpstream(MessagesUpstream):
    """A real Anthropic-speaking upstream on loopback that answers only once released.

    Every answer streams one text block and reports `usage`. Tests use it to have many
    requests in flight at once, deterministically.
    """

    def __init__(self, usage: dict[str, int]) -> None:
        super().__init__()
        self.usage = usage
        self._arrived = asyncio.Condition()

    async def wait_received(self, n: int) -> None:
        """Until `n` requests have arrived."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= n)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        async with self._arrived:
            self.received.append(payload)
            self._arrived.notify_all()
        await self.released.wait()
        usage = sse.Usage(**self.usage)
        content = sse.content_events([sse.text_block("held answer")])
        resp = web.StreamResponse(headers={"content-type": sse.SSE_CONTENT_TYPE})
        await resp.prepare(request)
        for event in sse.stream_events(sse.new_id("msg_01"), payload["model"], content, usage, "end_turn"):
            await resp.write(event)
        await resp.write_eof()
        return resp
