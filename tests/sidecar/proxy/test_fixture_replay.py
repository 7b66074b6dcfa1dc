"""Every captured Claude Code request goes through byte for byte, and so does its answer."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from sidecar.testing import captures
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import anthropic_config, sidecar_in_process
from sidecar.testing.recorder import TcpRecorder

PREFIXES = ("anthropic-", "x-claude-code-", "x-stainless-")
EXACT = {"user-agent", "x-app", "x-api-key", "authorization", "content-type", "accept"}


def fixtures() -> list[Path]:
    found = captures.all_captures()
    assert found, f"no captured requests under {captures.captures_dir()}"
    return found


def listed(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k.lower(), v) for k, v in headers if k.lower() in EXACT or k.lower().startswith(PREFIXES)]


@pytest.mark.parametrize("path", fixtures(), ids=lambda p: p.stem)
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_fixture_forwarded_byte_for_byte(path: Path, stream: bool, hermetic_env: Path) -> None:
    cap = captures.load(path)
    body, headers = cap.body, cap.headers
    if not stream:
        body = body.replace(b'"stream":true', b'"stream":false')
    async with FakeAnthropic() as fake, TcpRecorder(int(fake.url.rsplit(":", 1)[1])) as rec:
        async with sidecar_in_process(anthropic_config(f"http://127.0.0.1:{rec.port}"), hermetic_env) as sc:
            async with aiohttp.ClientSession() as s:
                url = sc.url + cap.target
                async with s.post(url, data=body, headers=headers) as resp:
                    got_status = resp.status
                    got_headers = list(resp.headers.items())
                    got_body = await resp.read()

    # Upstream direction: the fake saw exactly the client's body and listed headers.
    assert len(fake.requests) == 1
    up = fake.requests[0]
    assert up.path == cap.path and up.query_string == cap.query
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
    if cap.data["body"].get("stream") and stream:
        assert dict(got_headers)["Content-Type"].startswith("text/event-stream")
        assert got_body.rstrip().endswith(b'data: {"type":"message_stop"}')
