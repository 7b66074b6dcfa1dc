"""A sidecar with the cache configured, in process, pointed at a fake Anthropic upstream."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from multidict import CIMultiDict

from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import (
    InProcessSidecar,
    anthropic_config,
    ledger_rows,  # noqa: F401  (re-exported for the cache tests)
    sidecar_in_process,
)

PRICES = '[pricing."claude-opus-4-8"]\ninput = 5.0\noutput = 25.0\ncache_read = 0.5\ncache_write = 6.25\n'
HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01", "content-type": "application/json"}


def cache_config(fake: FakeAnthropic, cache: str = "reask_window_seconds = 0\n") -> str:
    """Config text: the fake upstream, prices for its model, and a [cache] section."""
    return anthropic_config(fake.url, PRICES + "[cache]\n" + cache)


@asynccontextmanager
async def cached_sidecar(fake: FakeAnthropic, home: Path, cache: str = "reask_window_seconds = 0\n") -> AsyncIterator[InProcessSidecar]:
    """A sidecar in this loop with `cache` as its [cache] section."""
    async with sidecar_in_process(cache_config(fake, cache), home) as sc:
        yield sc


def request(text: str = "What does the function parse_date in utils.py do?", **fields: Any) -> dict[str, Any]:
    """A small Messages request whose last turn is `text`."""
    body: dict[str, Any] = {
        "model": "claude-opus-4-8",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are a coding assistant."}],
        "tools": [{"name": "Read", "description": "Read a file", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }
    body.update(fields)
    return copy.deepcopy(body)


async def post(
    client: aiohttp.ClientSession, sc: InProcessSidecar, body: dict[str, Any], **headers: str
) -> tuple[int, CIMultiDict[str], bytes]:
    """POST /v1/messages; returns status, headers and the whole body."""
    h = {**HEADERS, **{k.replace("_", "-"): v for k, v in headers.items()}}
    async with client.post(sc.url + "/v1/messages", data=msgspec.json.encode(body), headers=h) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.read()
