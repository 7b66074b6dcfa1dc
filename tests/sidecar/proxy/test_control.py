"""The control API: status, usage and the live event stream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from sidecar.testing.fake_anthropic import FakeAnthropic, Text
from sidecar.testing.harness import InProcessSidecar, ledger_rows

BODY = {"model": "claude-opus-4-8", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


async def read_events(resp: aiohttp.ClientResponse, want: int) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    buf = b""
    while len(out) < want:
        buf += await resp.content.readany()
        while b"\n\n" in buf:
            raw, buf = buf.split(b"\n\n", 1)
            name = data = None
            for line in raw.decode().splitlines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
            if name and data is not None:
                out.append((name, data))
    return out


async def test_events_stream_priced_request_records(fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    auth = {"Authorization": f"Bearer {sidecar.token}"}
    fake.script(Text("one two three", usage={"input_tokens": 1000, "output_tokens": 200, "cache_read_input_tokens": 4000}))
    async with client.get(sidecar.url + "/sidecar/v1/events", headers=auth) as ev:
        assert ev.headers["content-type"].startswith("text/event-stream")
        [(hello, _)] = await read_events(ev, 1)
        assert hello == "hello"
        hdrs = {"x-api-key": "k", "x-claude-code-session-id": "S-42", "x-claude-code-agent-id": "a1b4f307f2a0f01df"}
        async with client.post(sidecar.url + "/v1/messages", json={**BODY, "stream": True}, headers=hdrs) as resp:
            await resp.read()
        events = await asyncio.wait_for(read_events(ev, 2), 5)
    (k1, started), (k2, done) = events
    assert k1 == "request_started" and started["session_id"] == "S-42"
    assert k2 == "request" and done["id"] == started["id"]
    assert done["input_tokens"] == 1000 and done["output_tokens"] == 200 and done["cache_read_tokens"] == 4000
    assert done["agent_id"] == "a1b4f307f2a0f01df" and done["stop_reason"] == "end_turn"
    # Opus 4.8: $5/M input, $25/M output, $0.50/M cache read.
    assert abs(done["cost_usd"] - (1000 * 5 + 200 * 25 + 4000 * 0.5) / 1e6) < 1e-12
    assert done["ttft_ms"] is not None and done["latency_ms"] >= done["ttft_ms"]


async def test_status_and_usage_reflect_requests(fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    auth = {"Authorization": f"Bearer {sidecar.token}"}
    fake.script(Text("x", usage={"input_tokens": 10, "output_tokens": 2}), Text("y", usage={"input_tokens": 30, "output_tokens": 4}))
    for stream in (True, False):
        async with client.post(sidecar.url + "/v1/messages", json={**BODY, "stream": stream}, headers={"x-api-key": "k"}) as resp:
            assert resp.status == 200
            await resp.read()
    from sidecar.appkeys import LEDGER

    await sidecar.app[LEDGER].flush()
    async with client.get(sidecar.url + "/sidecar/v1/status", headers=auth) as resp:
        status = await resp.json()
    assert status["usage"]["today"]["requests"] == 2
    assert status["usage"]["today"]["input_tokens"] == 40
    assert status["providers"][0]["credentials"] == "client"
    async with client.get(sidecar.url + "/sidecar/v1/usage?group_by=model", headers=auth) as resp:
        usage = await resp.json()
    [row] = usage["rows"]
    assert row["requests"] == 2 and row["output_tokens"] == 6
    async with client.get(sidecar.url + "/sidecar/v1/usage?group_by=nope", headers=auth) as resp:
        assert resp.status == 400
    async with client.get(sidecar.url + "/sidecar/v1/usage?since=yesterday", headers=auth) as resp:
        assert resp.status == 400


async def test_models_and_count_tokens_pass_through(fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    async with client.get(sidecar.url + "/v1/models", headers={"x-api-key": "k"}) as resp:
        assert resp.status == 200
        data = await resp.json()
    assert any(m["id"] == "claude-opus-4-8" for m in data["data"])
    async with client.post(sidecar.url + "/v1/messages/count_tokens?beta=true", json={"model": "claude-opus-4-8", "messages": [{"role": "user", "content": "foo"}]}, headers={"x-api-key": "k"}) as resp:
        assert resp.status == 200
        assert isinstance((await resp.json())["input_tokens"], int)
    assert [r.path for r in fake.requests] == ["/v1/messages/count_tokens"]


async def test_recent_requests_newest_first_bounded_and_as_the_events_carry_them(
    fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession
) -> None:
    """What a dashboard opened late loads: the ledger's rows, the same fields as `request` events."""
    auth = {"Authorization": f"Bearer {sidecar.token}"}
    fake.script(*(Text("x", usage={"input_tokens": 10 * (n + 1), "output_tokens": 2}) for n in range(3)))
    async with client.get(sidecar.url + "/sidecar/v1/events", headers=auth) as ev:
        await read_events(ev, 1)
        for _ in range(3):
            async with client.post(sidecar.url + "/v1/messages", json=BODY, headers={"x-api-key": "k"}) as resp:
                await resp.read()
        async with client.post(sidecar.url + "/v1/messages/count_tokens", json=BODY, headers={"x-api-key": "k"}) as resp:
            assert resp.status == 200
        live = [d for k, d in await asyncio.wait_for(read_events(ev, 8), 5) if k == "request"]
    await ledger_rows(sidecar)  # flushed

    async with client.get(sidecar.url + "/sidecar/v1/requests", headers=auth) as resp:
        assert resp.status == 200
        rows = (await resp.json())["rows"]
    async with client.get(sidecar.url + "/sidecar/v1/requests?limit=2&brief=1", headers=auth) as resp:
        brief = (await resp.json())["rows"]
    async with client.get(sidecar.url + "/sidecar/v1/requests?limit=0", headers=auth) as resp:
        bad = resp.status, (await resp.json())["error"]["type"]
    async with client.get(sidecar.url + "/sidecar/v1/requests") as resp:
        unauthenticated = resp.status

    assert rows == list(reversed(live))  # newest first, field for field
    assert rows[0]["endpoint"] == "/v1/messages/count_tokens"
    assert [r["id"] for r in brief] == [r["id"] for r in rows[:2]]
    assert set(brief[0]) == {"id", "ts", "endpoint", "cost_usd"}
    assert bad == (400, "invalid_request_error")
    assert unauthenticated == 401
