"""The implicit default route is a plain passthrough: no breaker answers in the upstream's
place; and a request refused before it was sent never keeps a breaker's probe."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from sidecar.testing.fake_anthropic import Error, FakeAnthropic
from sidecar.testing.harness import InProcessSidecar
from sidecar.testing.routing import body, no_retry_rounds, post, route
from tests.sidecar.routing.conftest import SidecarFactory, providers


async def test_with_no_routes_upstream_errors_pass_through_and_no_breaker_opens(
    fakes: list[FakeAnthropic], routed: SidecarFactory, client: aiohttp.ClientSession
) -> None:
    a = fakes[0]
    a.script(*[Error(529, message="upstream says 529")] * 12)
    async with routed(providers(fakes, "a") + "[routing.breaker]\nfailures = 5\ncooldown = 30\n") as sc:
        for _ in range(12):
            status, _, raw = await post(client, sc)
            assert status == 529
            assert json.loads(raw)["error"]["message"] == "upstream says 529"
        assert (await post(client, sc))[0] == 200
    assert len(a.requests) == 13


async def raw_post(sc: InProcessSidecar, extra: bytes) -> int:
    """POST /v1/messages over a raw socket with `extra` header bytes; the answer's status."""
    host, port = sc.url.rsplit("/", 1)[1].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    data = body()
    writer.write(
        b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\nx-api-key: k\r\n"
        + extra + f"content-length: {len(data)}\r\nconnection: close\r\n\r\n".encode() + data
    )  # fmt: skip
    raw = await reader.read()
    writer.close()
    return int(raw.split(b" ", 2)[1])


async def test_a_request_refused_before_sending_gives_the_probe_back(
    fakes: list[FakeAnthropic], routed: SidecarFactory, client: aiohttp.ClientSession
) -> None:
    a = fakes[0]
    a.script(Error(529))
    cfg = providers(fakes, "a") + route('{ provider = "a" }') + no_retry_rounds() + "[routing.breaker]\nfailures = 1\ncooldown = 0.2\n"
    async with routed(cfg) as sc:
        assert (await post(client, sc))[0] == 529  # the breaker opens
        await asyncio.sleep(0.3)  # half-open: the next request is the probe
        assert await raw_post(sc, b"x-note: \xff\r\n") == 400  # cannot be sent: no verdict
        assert (await post(client, sc))[0] == 200  # so the probe is still there to take
    assert len(a.requests) == 2
