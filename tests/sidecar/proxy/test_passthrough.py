"""Passthrough details: compressed request bodies, path and query, sidecar headers."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import aiohttp
import pytest

from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import InProcessSidecar, anthropic_config, sidecar_in_process

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


async def test_upstream_goes_through_the_http_proxy_from_the_environment(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake stands in for a corporate forward proxy: it gets the absolute-form request.
    monkeypatch.setenv("HTTP_PROXY", fake.url)
    async with sidecar_in_process(anthropic_config("http://api.upstream.test"), hermetic_env) as sc:
        async with client.post(sc.url + "/v1/messages", data=BODY, headers={"x-api-key": "k"}) as resp:
            assert resp.status == 200
    [req] = fake.requests
    assert req.path == "/v1/messages"
    assert req.header("host") == "api.upstream.test"
