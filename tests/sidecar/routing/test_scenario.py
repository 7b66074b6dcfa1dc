"""Scenarios derived from Claude Code's real requests."""

from __future__ import annotations

import base64
import json

import msgspec
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.pipeline import RequestContext
from sidecar.protocol.anthropic import RequestHead
from sidecar.providers import tokens
from sidecar.routing.scenario import estimate_input_tokens, scenarios
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


def test_long_context_is_judged_by_the_gates_estimate_where_an_image_counts_what_the_api_charges() -> None:
    data = base64.b64encode(bytes(range(256)) * 4000).decode()  # ~1.3 MB of base64, ~340k tokens by size
    body = msgspec.json.encode(
        {"model": "claude-opus-4-8", "max_tokens": 10,
         "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}]}]}
    )  # fmt: skip
    ctx = ctx_for(body)
    assert estimate_input_tokens(ctx) == tokens.estimate(body, ctx.json) < 2 * tokens.IMAGE_MAX
    assert "long_context" not in scenarios(ctx, long_context_tokens=100_000)
    odd = b'{"messages":[]}'  # 15 bytes: rounded up, as the gate rounds
    assert estimate_input_tokens(ctx_for(odd)) == tokens.estimate(odd, dict) == 4
