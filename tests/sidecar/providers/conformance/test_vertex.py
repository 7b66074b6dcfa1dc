"""Vertex conformance: every captured Claude Code request through a real sidecar to the fake
Vertex (which refuses what Vertex refuses); the upstream body is the Anthropic body with
exactly the documented changes, the beta header filtered; streamed answers read by the
anthropic SDK's stream helper equal the non-streamed ones."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from sidecar.testing import captures
from sidecar.testing.fake_behaviours import Text, ToolUse
from sidecar.testing.fake_vertex import FakeVertex, clean_google_env, vertex_config
from sidecar.testing.harness import InProcessSidecar, sidecar_in_process

CAPTURES = [p.stem for p in captures.all_captures()]
# Of the flags Claude Code sends, the ones Vertex accepts.
VERTEX_TAKES = {"context-1m-2025-08-07", "interleaved-thinking-2025-05-14", "context-management-2025-06-27"}
REPLIES = {
    "text": Text("Done. The answer is 42 — ✓.", usage={"input_tokens": 1000}),
    "thinking": Text("Final words.", thinking="First I consider the files.", usage={"input_tokens": 1000}),
    "tool": ToolUse(name="Bash", input={"command": "git status"}, text="Checking.", usage={"input_tokens": 1000}),
}
SDK_KEYS = ("model", "max_tokens", "messages", "system", "tools", "metadata", "thinking")
MODEL = "claude-opus-4-8@20261001"


def expected_body(body: dict[str, Any], beta_header: str, stream: bool) -> dict[str, Any]:
    """The documented changes, spelled out independently of the code under test."""
    exp = copy.deepcopy({k: v for k, v in body.items() if k not in ("model", "stream")})
    if stream:
        exp["stream"] = True
    exp["anthropic_version"] = "vertex-2023-10-16"
    oc = exp.get("output_config", {})
    oc.pop("effort", None)  # effort and structured outputs are not taken by Vertex
    oc.pop("format", None)
    if "output_config" in exp and not oc:
        del exp["output_config"]
    folded: list[dict[str, Any]] = []
    for m in exp["messages"]:
        if m["role"] == "system":
            m = {"role": "user", "content": [{"type": "text", "text": f"<system-reminder>\n{m['content']}\n</system-reminder>"}]}
        if folded and folded[-1]["role"] == m["role"] == "user":
            prev = folded[-1]["content"]
            prev = prev if isinstance(prev, list) else [{"type": "text", "text": prev}]
            cur = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
            folded[-1] = {**folded[-1], "content": prev + cur}
        else:
            folded.append(m)
    exp["messages"] = folded
    return exp


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[FakeVertex]:
    clean_google_env(monkeypatch, tmp_path)
    async with FakeVertex() as f:
        yield f


@pytest.fixture
async def sc(fake: FakeVertex, tmp_path: Path, hermetic_env: Path) -> AsyncIterator[InProcessSidecar]:
    creds = tmp_path / "sa.json"
    creds.write_text(json.dumps(fake.service_account_info()))
    async with sidecar_in_process(vertex_config(fake, creds), hermetic_env) as s:
        yield s


def beta_of(cap: captures.Capture) -> str:
    return next(v for k, v in cap.headers if k.lower() == "anthropic-beta")


def strip_ids(m: dict[str, Any]) -> dict[str, Any]:
    m.pop("id")
    for block in m["content"]:
        block.pop("id", None)
    return m


@pytest.mark.parametrize("reply", list(REPLIES), ids=list(REPLIES))
@pytest.mark.parametrize("name", [c for c in CAPTURES if c != "count-tokens"])
async def test_captured_requests(fake: FakeVertex, sc: InProcessSidecar, name: str, reply: str) -> None:
    cap = captures.load(name)
    body = cap.data["body"]
    fake.script(REPLIES[reply], REPLIES[reply])
    client = anthropic.AsyncAnthropic(base_url=sc.url, api_key=sc.token, max_retries=0,
                                      default_headers={"anthropic-beta": beta_of(cap)})  # fmt: skip
    params = {k: v for k, v in body.items() if k in SDK_KEYS}
    params["model"] = MODEL
    extra = {k: v for k, v in body.items() if k not in SDK_KEYS and k != "stream"}
    async with client.messages.stream(**params, extra_body=extra) as stream:
        streamed = strip_ids((await stream.get_final_message()).model_dump())
    whole = strip_ids((await client.messages.create(**params, extra_body=extra, timeout=600)).model_dump())
    await client.close()
    assert streamed == whole
    stream_req, whole_req = fake.requests
    assert stream_req.json() == expected_body(body, beta_of(cap), stream=True)
    assert whole_req.json() == expected_body(body, beta_of(cap), stream=False)
    kept = [f for f in beta_of(cap).split(",") if f in VERTEX_TAKES]
    assert stream_req.header("anthropic-beta") == (",".join(kept) or None)
    assert stream_req.path.endswith(f"/models/{MODEL}:streamRawPredict") and whole_req.path.endswith(f"/models/{MODEL}:rawPredict")


async def test_captured_count_tokens(fake: FakeVertex, sc: InProcessSidecar) -> None:
    cap = captures.load("count-tokens")
    body = cap.data["body"]
    client = anthropic.AsyncAnthropic(base_url=sc.url, api_key=sc.token, max_retries=0)
    got = await client.messages.count_tokens(model=MODEL, messages=body["messages"], tools=body["tools"],
                                             extra_headers={"anthropic-beta": beta_of(cap)})  # fmt: skip
    await client.close()
    (req,) = fake.requests
    assert req.path.endswith("/publishers/anthropic/models/count-tokens:rawPredict")
    assert req.json() == {**body, "model": MODEL, "anthropic_version": "vertex-2023-10-16"}
    assert req.header("anthropic-beta") == "interleaved-thinking-2025-05-14,context-management-2025-06-27"
    assert got.input_tokens > 0
