"""The request path is one list, assembled in one place, and docs/architecture.md reads like it."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from sidecar.appkeys import STAGES
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.fake_behaviours import Text
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
