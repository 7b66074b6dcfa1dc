"""Passthrough details: compressed request bodies, path and query, sidecar headers."""

from __future__ import annotations

import gzip
import json

import aiohttp

from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import InProcessSidecar

BODY = json.dumps({"model": "claude-opus-4-8", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}).encode()


async def test_gzip_request_body_goes_upstream_plain(fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    hdrs = {"content-encoding": "gzip", "content-type": "application/json", "x-api-key": "k"}
    async with client.post(sidecar.url + "/v1/messages", data=gzip.compress(BODY), headers=hdrs) as resp:
        assert resp.status == 200
    [req] = fake.requests
    assert req.body == BODY
    assert req.header("content-encoding") is None


async def test_sidecar_headers_stay_local_and_are_added_to_responses(
    fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession
) -> None:
    hdrs = {"x-api-key": "k", "x-sidecar-cache": "off", "x-sidecar-tag": "t", "X-Custom-Thing": "kept"}
    async with client.post(sidecar.url + "/v1/messages?beta=true", data=BODY, headers=hdrs) as resp:
        assert resp.status == 200
        assert resp.headers["x-sidecar-upstream"] == "anthropic/claude-opus-4-8"
        assert len(resp.headers["x-sidecar-request-id"]) == 26
    [req] = fake.requests
    assert req.query_string == "beta=true"
    assert [k for k, _ in req.headers if k.lower().startswith("x-sidecar")] == []
    assert req.header("x-custom-thing") == "kept"
