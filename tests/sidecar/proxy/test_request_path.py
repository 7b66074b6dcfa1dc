"""The request path is one list, assembled in one place, and docs/architecture.md reads like it."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

import aiohttp

from sidecar.appkeys import SETTLERS, STAGES
from sidecar.audit.stage import AuditStage
from sidecar.cache.control import CACHE
from sidecar.pipeline import RequestContext
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.fake_behaviours import Cut, Error, Text
from sidecar.testing.harness import anthropic_config, sidecar_in_process

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "architecture.md"
# The stage table: "| n | Name | `sidecar/x/y.py` | what it does |"
ROW = re.compile(r"^\|\s*\d+\s*\|\s*(\w+)\s*\|\s*`([\w/]+\.py)`\s*\|", re.M)


def doc_stages() -> list[tuple[str, str]]:
    """(class name, file) of each stage row in docs/architecture.md, in order."""
    return ROW.findall(DOC.read_text(encoding="utf-8"))


async def test_the_stages_run_in_the_documented_order_with_dispatch_last(fake: FakeAnthropic, hermetic_env: Path) -> None:
    fake.script(Text("hello"))
    async with sidecar_in_process(anthropic_config(fake.url), hermetic_env) as sc:
        names = [type(s).__name__ for s in sc.app[STAGES]]
        assert names[-1] == "Dispatch"  # every other stage has had its request hook when the router opens the upstream
        documented = [name for name, _ in doc_stages()]
        assert [n for n in documented if n in names] == names  # the doc lists every stage, in the order they run
        async with aiohttp.ClientSession() as client:
            body = {"model": "claude-x", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
            async with client.post(sc.url + "/v1/messages", json=body, headers={"x-api-key": "k"}) as resp:
                assert resp.status == 200
                assert (await resp.json())["content"][0]["text"] == "hello"


def test_the_doc_names_the_file_of_each_stage() -> None:
    rows = doc_stages()
    assert len(rows) >= 10
    for name, file in rows:
        text = (ROOT / file).read_text(encoding="utf-8")
        assert re.search(rf"^class {name}\b", text, re.M), f"{file} defines no class {name}"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/architecture.md" in readme


class _Probe:
    """A stage that notes its complete and answered hooks, per request."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []

    async def on_request(self, ctx: RequestContext) -> None:
        return None

    def on_complete(self, ctx: RequestContext) -> None:
        self.log.append(("complete", ctx.id))

    def on_answered(self, ctx: RequestContext) -> None:
        self.log.append(("answered", ctx.id))


async def test_every_request_is_settled_once_after_it_completed_whatever_its_end(
    fake: FakeAnthropic, hermetic_env: Path
) -> None:
    """Answered hooks (counters, cache stores, the audit chain) run once per request and only
    after its complete hooks: for a JSON answer, a stream, an upstream error, a broken
    stream, a refusal, a count, and a client that leaves mid-stream. Nothing stays reserved
    or held for a request afterwards."""
    fake.script(
        Text("one"), Text("two words"), Error(status=400, type="invalid_request_error"),
        Cut(after_events=2), Text("slow " * 40, delay_between_events=0.01), Text("three"),
    )  # fmt: skip
    async with sidecar_in_process(anthropic_config(fake.url), hermetic_env) as sc:
        probe = _Probe()
        sc.app[STAGES].insert(0, probe)
        sc.app[SETTLERS].append(probe)
        body = {"model": "claude-x", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        url, headers = sc.url + "/v1/messages", {"x-api-key": "k"}
        async with aiohttp.ClientSession() as client:
            for i, extra in enumerate(({}, {"stream": True}, {}, {"stream": True})):
                async with client.post(url, json={**body, **extra, "messages": [{"role": "user", "content": f"q{i}"}]}, headers=headers) as resp:
                    with contextlib.suppress(aiohttp.ClientPayloadError):
                        await resp.read()
            async with client.post(url, data=b"{not json", headers=headers) as resp:
                assert resp.status == 400
            async with client.post(url + "/count_tokens", json=body, headers=headers) as resp:
                await resp.read()
            async with client.post(url, json={**body, "stream": True, "messages": [{"role": "user", "content": "q5"}]}, headers=headers) as resp:
                await resp.content.readline()  # the first line, then the client leaves
            async with client.post(url, json={**body, "messages": [{"role": "user", "content": "q6"}]}, headers=headers) as resp:
                assert resp.status == 200
            for _ in range(200):
                if len(probe.log) == 16:
                    break
                await asyncio.sleep(0.01)
        ids = list(dict.fromkeys(rid for _, rid in probe.log))
        assert len(ids) == 8
        for rid in ids:
            assert [what for what, r in probe.log if r == rid] == ["complete", "answered"], rid
        cache, audit = sc.app[CACHE], next(s for s in sc.app[STAGES] if isinstance(s, AuditStage)).audit
        assert cache.entries._sink.reserved == 0 and not cache._storing and not audit._held
