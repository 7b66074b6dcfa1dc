"""Every captured Claude Code request goes through byte for byte, and so does its answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import anthropic_config, sidecar_in_process
from sidecar.testing.recorder import TcpRecorder

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "claude-code"
PREFIXES = ("anthropic-", "x-claude-code-", "x-stainless-")
EXACT = {"user-agent", "x-app", "x-api-key", "authorization", "content-type", "accept"}
NOT_SENT = {"host", "content-length", "connection", "accept-encoding"}


def fixtures() -> list[Path]:
    found = sorted(FIXTURES.glob("*.json"))
    assert found, f"no fixtures under {FIXTURES}"
    return found


def load(path: Path) -> tuple[dict[str, Any], bytes, list[tuple[str, str]]]:
    cap = json.loads(path.read_text())
    body = json.dumps(cap["body"], separators=(",", ":"), ensure_ascii=False).encode()
    headers = [(k, v) for k, v in cap["headers"] if k.lower() not in NOT_SENT]
    return cap, body, headers


def listed(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k.lower(), v) for k, v in headers if k.lower() in EXACT or k.lower().startswith(PREFIXES)]


@pytest.mark.parametrize("path", fixtures(), ids=lambda p: p.stem)
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_fixture_forwarded_byte_for_byte(path: Path, stream: bool, hermetic_env: Path) -> None:
    cap, body, headers = load(path)
    if not stream:
        body = body.replace(b'"stream":true', b'"stream":false')
    async with FakeAnthropic() as fake, TcpRecorder(int(fake.url.rsplit(":", 1)[1])) as rec:
        async with sidecar_in_process(anthropic_config(f"http://127.0.0.1:{rec.port}"), hermetic_env) as sc:
            async with aiohttp.ClientSession() as s:
                url = f"{sc.url}{cap['path']}?{cap['query']}"
                async with s.post(url, data=body, headers=headers) as resp:
                    got_status = resp.status
                    got_headers = list(resp.headers.items())
                    got_body = await resp.read()

    # Upstream direction: the fake saw exactly the client's body and listed headers.
    assert len(fake.requests) == 1
    up = fake.requests[0]
    assert up.path == cap["path"] and up.query_string == cap["query"]
    assert up.body == body
    assert listed(up.headers) == listed(headers)

    # Downstream direction: the client got exactly what the upstream sent.
    [(_, raw)] = rec.exchanges()
    assert got_status == raw.status == 200
    assert got_body == raw.body
    assert len(got_body) > 0
    ours = {k.lower() for k, _ in got_headers}
    for k, v in raw.headers:
        low = k.lower()
        if low in ("transfer-encoding", "content-length", "connection", "date", "server", "keep-alive"):
            continue
        assert low in ours, f"header {k} was dropped"
        assert (k, v) in got_headers or (low, v) in [(a.lower(), b) for a, b in got_headers]
    if cap["body"].get("stream") and stream and not cap["path"].endswith("count_tokens"):
        assert dict(got_headers)["Content-Type"].startswith("text/event-stream")
        assert got_body.rstrip().endswith(b'data: {"type":"message_stop"}')
