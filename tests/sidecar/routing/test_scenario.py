"""Scenarios derived from Claude Code's real requests."""

from __future__ import annotations

import json

import msgspec
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.pipeline import RequestContext
from sidecar.protocol.anthropic import RequestHead
from sidecar.routing.scenario import scenarios
from sidecar.testing.captures import shared_dir

FIXTURES = shared_dir() / "fixtures" / "claude-code"


def ctx_for(body: bytes, headers: dict[str, str] | None = None) -> RequestContext:
    h = CIMultiDictProxy(CIMultiDict(headers or {}))
    return RequestContext("/v1/messages", body, RequestHead(), None, h.get("x-claude-code-agent-id"), headers=h)


def fixture(name: str) -> tuple[bytes, dict[str, str]]:
    data = json.loads((FIXTURES / name).read_text())
    return msgspec.json.encode(data["body"]), {k.lower(): v for k, v in data["headers"]}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("main-turn-opus.json", {"thinking"}),
        ("session-title-structured-output.json", {"background"}),
        ("webfetch-summary.json", {"background"}),
        ("explore-subagent-haiku.json", {"background", "subagent"}),
        ("main-turn-haiku.json", {"background", "thinking"}),
    ],
)
def test_captured_requests_get_their_scenarios(name: str, expected: set[str]) -> None:
    body, headers = fixture(name)
    assert scenarios(ctx_for(body, headers), long_context_tokens=10**9) == expected


def test_long_context_image_and_web_search() -> None:
    body = msgspec.json.encode(
        {
            "model": "claude-opus-4-8",
            "max_tokens": 10,
            "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            "messages": [
                {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}
            ],
        }
    )
    got = scenarios(ctx_for(body), long_context_tokens=10)
    assert {"long_context", "image", "web_search"} <= got
    assert "long_context" not in scenarios(ctx_for(body), long_context_tokens=10**6)


def test_a_body_that_is_not_a_messages_request_has_only_header_scenarios() -> None:
    assert scenarios(ctx_for(b'{"model": 3}', {"x-claude-code-agent-id": "a1"}), 10**6) == {"subagent"}
