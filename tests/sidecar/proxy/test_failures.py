"""Upstream failures reach Claude Code the way it understands them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from sidecar.testing.fake_anthropic import (
    Cut,
    Error,
    FakeAnthropic,
    StallBeforeHeaders,
    StallMidStream,
    StreamError,
    Text,
)
from sidecar.testing.harness import (
    InProcessSidecar,
    anthropic_config,
    ledger_rows,
    sidecar_in_process,
)

BODY = {"model": "claude-opus-4-8", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01", "x-claude-code-session-id": "sess-1"}


def body(stream: bool) -> bytes:
    return json.dumps({**BODY, "stream": stream}).encode()


async def expect_aborted(client: aiohttp.ClientSession, sc: InProcessSidecar) -> None:
    """A streaming request starts (200) and then breaks (never a clean end); it is recorded as aborted."""
    async with client.post(sc.url + "/v1/messages", data=body(True), headers=HEADERS) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    [row] = await ledger_rows(sc)
    assert row["outcome"] == "aborted"


async def test_stream_cut_midway_aborts_the_client(fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    fake.script(Cut(after_events=4))
    await expect_aborted(client, sidecar)


async def test_json_body_cut_before_anything_was_sent_is_a_clean_error(
    fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession
) -> None:
    # Non-streaming answers are read whole before the first byte goes out, so a broken
    # upstream body is still an error the client can retry, not a truncated message.
    fake.script(Cut(after_bytes=40))
    async with client.post(sidecar.url + "/v1/messages", data=body(False), headers=HEADERS) as resp:
        assert resp.status == 502
        err = json.loads(await resp.read())
    assert err["error"]["type"] == "api_error"
    assert "broke off its response" in err["error"]["message"]
    [row] = await ledger_rows(sidecar)
    assert row["outcome"] == "upstream_error"


async def test_clean_end_without_message_stop_is_an_abort_not_a_clean_end(
    fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession
) -> None:
    # An upstream that ends cleanly after a finished block: passing that on as a clean end
    # would make Claude Code keep a truncated answer.
    fake.script(Cut(after_events=5, clean_end=True))
    await expect_aborted(client, sidecar)


async def test_events_arrive_before_the_stream_ends(fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    # The upstream sends three events, then waits; the client must have them during the wait.
    fake.script(StallMidStream(after_events=3, seconds=1.5))
    async with client.post(sidecar.url + "/v1/messages", data=body(True), headers=HEADERS) as resp:
        seen = b""
        async with asyncio.timeout(1.0):
            while seen.count(b"\n\n") < 3:
                seen += await resp.content.readany()
        assert seen.startswith(b"event: message_start")
        rest = await resp.read()
    assert (seen + rest).rstrip().endswith(b'data: {"type":"message_stop"}')


@pytest.mark.parametrize(
    ("status", "etype", "extra"),
    [
        (429, "rate_limit_error", {"retry-after": "7"}),
        (529, "overloaded_error", {"retry-after": "2"}),
        (500, "api_error", {}),
        (400, "invalid_request_error", {}),
        (401, "authentication_error", {}),
    ],
)
@pytest.mark.parametrize("stream", [True, False])
async def test_upstream_errors_pass_through_unmodified(
    status: int, etype: str, extra: dict[str, str], stream: bool,
    fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession,
) -> None:
    err = Error(status, message=f"upstream says {status}", headers=extra, should_retry=True)
    fake.script(err, err)
    async with aiohttp.ClientSession() as direct_client:
        async with direct_client.post(fake.url + "/v1/messages", data=body(stream), headers=HEADERS) as d:
            direct_body = json.loads(await d.read())
    async with client.post(sidecar.url + "/v1/messages", data=body(stream), headers=HEADERS) as resp:
        got = await resp.read()
        assert resp.status == status
        for k, v in extra.items():
            assert resp.headers[k] == v
        assert resp.headers["x-should-retry"] == "true"
        assert resp.headers["request-id"].startswith("req_")
    envelope = json.loads(got)
    assert envelope["error"] == {"type": etype, "message": f"upstream says {status}"}
    assert envelope.keys() == direct_body.keys()
    rows = await ledger_rows(sidecar)
    assert rows[-1]["status"] == status and rows[-1]["outcome"] == "upstream_error"
    assert rows[-1]["error_type"] == etype


async def test_in_stream_error_event_passes_through(fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    fake.script(StreamError(after_events=1))
    async with client.post(sidecar.url + "/v1/messages", data=body(True), headers=HEADERS) as resp:
        raw = await resp.read()
    assert b"event: error" in raw and b"overloaded_error" in raw
    [row] = await ledger_rows(sidecar)
    assert row["error_type"] == "overloaded_error" and row["outcome"] == "upstream_error"


async def test_unreachable_upstream_is_an_overloaded_envelope(hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    async with sidecar_in_process(anthropic_config(f"http://127.0.0.1:{dead}"), hermetic_env) as sc:
        async with client.post(sc.url + "/v1/messages", data=body(True), headers=HEADERS) as resp:
            assert resp.status == 529
            err = json.loads(await resp.read())
            request_id = resp.headers["x-sidecar-request-id"]
        rows = await ledger_rows(sc)
    assert rows[0]["id"] == request_id
    assert err["type"] == "error" and err["error"]["type"] == "overloaded_error"
    assert err["error"]["message"].startswith("claude-sidecar: cannot reach upstream anthropic")
    assert rows[0]["outcome"] == "upstream_error"


async def test_silent_upstream_times_out_with_504(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    fake.script(StallBeforeHeaders(seconds=3.0))
    cfg = anthropic_config(fake.url, "read_timeout = 0.5\n")
    async with sidecar_in_process(cfg, hermetic_env) as sc:
        async with client.post(sc.url + "/v1/messages", data=body(False), headers=HEADERS) as resp:
            assert resp.status == 504
            err = json.loads(await resp.read())
    assert err["error"]["type"] == "timeout_error"


async def test_client_going_away_mid_stream_is_recorded(fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    fake.script(StallMidStream(after_events=2, seconds=1.0))
    async with client.post(sidecar.url + "/v1/messages", data=body(True), headers=HEADERS) as resp:
        await resp.content.readany()
        resp.close()
    for _ in range(100):
        rows = await ledger_rows(sidecar)
        if rows:
            break
        await asyncio.sleep(0.05)
    assert rows[0]["outcome"] == "client_closed"
    # The sidecar keeps serving.
    fake.script(Text("still here"))
    async with client.post(sidecar.url + "/v1/messages", data=body(False), headers=HEADERS) as resp:
        assert resp.status == 200
        assert b"still here" in await resp.read()


async def test_upstream_silent_mid_stream_past_the_idle_timeout_aborts(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    fake.script(StallMidStream(after_events=3, seconds=3.0))
    async with sidecar_in_process(anthropic_config(fake.url, "read_timeout = 0.5\n"), hermetic_env) as sc:
        await expect_aborted(client, sc)
