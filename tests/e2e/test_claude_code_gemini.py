"""End to end: the real Claude Code CLI, routed by the sidecar to a fake Gemini upstream.

The sidecar daemon (started through the real CLI) holds the Gemini key and routes every
model to `gemini/gemini-3-pro-preview`; Claude Code runs a Bash tool round trip. The fake
Gemini checks each request the way the API does (schema subset, role alternation,
function call/response pairing) and, like Gemini 3, refuses a history whose function call
lost the thought signature it issued, so the test passes only if the signature survived
Claude Code's history and was put back on the same part.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.testing.fake_gemini import FakeGemini, Reply, call, new_signature, text, thought
from tests.e2e.helpers import (
    Setup,
    claude_result,
    ledger_rows,
    parse_env,
    run,
    run_claude,
    sidecar_cli,
    stop_sidecar,
)

pytestmark = pytest.mark.e2e

GEMINI_KEY = "gemini-e2e-key"
UPSTREAM_MODEL = "gemini-3-pro-preview"


def gemini_config(url: str) -> str:
    """One Gemini provider and a route that sends every model to it."""
    return f"""
[[providers]]
name = "gemini"
type = "gemini"
base_url = "{url}"
keys = ["env:E2E_GEMINI_KEY"]

[[routes]]
name = "everything-to-gemini"
match = {{ model = "*" }}
targets = [{{ provider = "gemini", model = "{UPSTREAM_MODEL}" }}]
"""


@pytest.fixture
async def gemini_setup(tmp_path: Path) -> AsyncIterator[tuple[Setup, FakeGemini]]:
    """A fake Gemini, a sidecar home whose config routes to it, and a git repo for Claude Code."""
    home = tmp_path / "sidecar"
    home.mkdir()
    claude_home = tmp_path / "claude-home"
    claude_home.mkdir()
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / "README.md").write_text("# e2e\n\nA scratch project for the Gemini e2e test.\n")
    async with FakeGemini(api_key=GEMINI_KEY) as fake:
        config = home / "config.toml"
        config.write_text(gemini_config(fake.url))
        env = {
            **os.environ,
            "CLAUDE_SIDECAR_HOME": str(home),
            "CLAUDE_SIDECAR_CONFIG": str(config),
            "CLAUDE_SIDECAR_PORT": "0",
            "E2E_GEMINI_KEY": GEMINI_KEY,
        }
        s = Setup(fake, home, env, claude_home, workdir)  # type: ignore[arg-type]
        git = await run("git", "init", "-q", env=s.claude_env(), cwd=workdir)
        assert git.rc == 0, git.describe()
        try:
            yield s, fake
        finally:
            await stop_sidecar(s)


async def start_for_gemini(s: Setup) -> dict[str, str]:
    """`claude-sidecar start` and `env`: with injected keys, Claude Code gets the local token."""
    started = await sidecar_cli(s.sidecar_env, "start")
    assert started.rc == 0, started.describe()
    printed = await sidecar_cli(s.sidecar_env, "env")
    assert printed.rc == 0, printed.describe()
    cc_env = parse_env(printed.out)
    # The sidecar holds the upstream key: its token goes in a header of its own.
    assert cc_env["ANTHROPIC_CUSTOM_HEADERS"].startswith("x-sidecar-token: "), cc_env
    assert cc_env["ANTHROPIC_AUTH_TOKEN"] == "claude-sidecar", cc_env
    return cc_env


def function_calls(contents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for c in contents if c["role"] == "model" for p in c["parts"] if "functionCall" in p]


def function_responses(contents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p["functionResponse"] for c in contents if c["role"] == "user" for p in c["parts"] if "functionResponse" in p]


async def test_claude_code_tool_round_trip_on_gemini(gemini_setup: tuple[Setup, FakeGemini]) -> None:
    s, fake = gemini_setup
    marker = f"gemini-e2e-{secrets.token_hex(6)}"
    answer = f"The command printed {marker}."
    fake.script(
        Reply((thought("The user wants the marker printed."), call("Bash", {"command": f"echo {marker}", "description": "Print the marker"}))),
        Reply((text(answer, signature=new_signature()),)),
    )
    cc_env = await start_for_gemini(s)
    done = await run_claude(
        s,
        cc_env,
        f"Run `echo {marker}` with the Bash tool and tell me what it printed.",
        "--allowedTools", "Bash",
    )  # fmt: skip
    assert done.rc == 0, done.describe()
    result = claude_result(done)
    assert result["is_error"] is False, result
    assert result["subtype"] == "success", result
    assert answer in result["result"], result
    assert result["num_turns"] == 2, result

    # Two streamed generate calls, both accepted by the fake's request checks.
    posts = [r for r in fake.requests if r.method == "POST"]
    assert [r.path.rsplit(":", 1)[-1] for r in posts] == ["streamGenerateContent"] * 2, [r.path for r in posts]
    assert all(r.query_string == "alt=sse" for r in posts)
    assert all(r.header("x-goog-api-key") == GEMINI_KEY for r in posts)
    assert all(r.header("anthropic-beta") is None and r.header("authorization") is None for r in posts)
    assert fake.pending == 0
    first, second = (r.json() for r in posts)
    assert not function_calls(first["contents"])
    declared = {d["name"] for t in first["tools"] for d in t.get("functionDeclarations", [])}
    assert "Bash" in declared, declared
    assert first["systemInstruction"]["parts"], first.keys()

    # The second call replays the call with the very signature the fake issued for it,
    # and answers it with the command's real output.
    [replayed] = function_calls(second["contents"])
    assert replayed["functionCall"] == {"name": "Bash", "args": {"command": f"echo {marker}", "description": "Print the marker"}}
    assert fake.issued[replayed["thoughtSignature"]] == ("call", "Bash")
    [response] = function_responses(second["contents"])
    assert response["name"] == "Bash"
    assert marker in response["response"]["output"], response

    # The ledger metered both calls against the Gemini provider.
    rows = await ledger_rows(s.db_file, 2)
    assert len(rows) == 2, rows
    for row in rows:
        assert row["provider"] == "gemini", row
        assert (row["status"], row["outcome"]) == (200, "ok"), row
        assert row["session_id"] == result["session_id"], row
        assert row["input_tokens"] > 0 and row["output_tokens"] > 0, row
    assert [r["stop_reason"] for r in rows] == ["tool_use", "end_turn"], rows
