"""End to end: the real Claude Code CLI, routed by the sidecar to an OpenAI-format upstream,
completes a task with a Bash tool round trip.

Claude Code -> sidecar daemon (a `[[routes]]` entry sends every model to the `openai`
provider as `gpt-fake-large`) -> the fake OpenAI Chat Completions upstream, which checks
every request against the Chat Completions schema (the conformance suite's validator)
and answers first with a streamed tool call, then with the final text. The sidecar injects
its own OpenAI key; Claude Code's Anthropic key never leaves the machine's loopback.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar.protocol.openai import quirks_for
from sidecar.testing.fake_openai import FakeOpenAI, Reply, ToolCall
from sidecar.testing.openai_validate import validate_chat_request
from tests.e2e.helpers import (
    API_KEY,
    MODEL,
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

OPENAI_KEY = "sk-openai-e2e-provider-key"
UPSTREAM_MODEL = "gpt-fake-large"


def config(base_url: str) -> str:
    return (
        f'[[providers]]\nname = "openai"\ntype = "openai"\nbase_url = "{base_url}"\n'
        '\n[[routes]]\nname = "everything-to-openai"\nmatch = { model = "*" }\n'
        f'targets = [{{ provider = "openai", model = "{UPSTREAM_MODEL}" }}]\n'
    )


@pytest.fixture
async def openai_setup(tmp_path: Path) -> AsyncIterator[Setup]:
    """The fake OpenAI upstream, a sidecar home routed to it, and a git repo for Claude Code."""
    home = tmp_path / "sidecar"
    home.mkdir()
    claude_home = tmp_path / "claude-home"
    claude_home.mkdir()
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / "README.md").write_text("# e2e\n\nA scratch project for the sidecar's OpenAI e2e test.\n")
    quirks = quirks_for("openai", "openai", {})
    async with FakeOpenAI(validate=lambda body: validate_chat_request(body, quirks)) as fake:
        cfg = home / "config.toml"
        cfg.write_text(config(fake.base_url))
        env = {
            **os.environ,
            "CLAUDE_SIDECAR_HOME": str(home),
            "CLAUDE_SIDECAR_CONFIG": str(cfg),
            "CLAUDE_SIDECAR_PORT": "0",
            "CLAUDE_SIDECAR_OPENAI_API_KEY": OPENAI_KEY,
        }
        s = Setup(fake, home, env, claude_home, workdir)  # type: ignore[arg-type]  # duck-typed fake
        git = await run("git", "init", "-q", env=s.claude_env(), cwd=workdir)
        assert git.rc == 0, git.describe()
        try:
            yield s
        finally:
            await stop_sidecar(s)


async def test_claude_code_completes_a_tool_round_trip_on_an_openai_upstream(openai_setup: Setup) -> None:
    s = openai_setup
    fake: FakeOpenAI = s.fake  # type: ignore[assignment]
    marker = f"sidecar-openai-{secrets.token_hex(6)}"
    call = ToolCall("Bash", {"command": f"echo {marker}", "description": "Print the e2e marker"}, id="call_e2e_bash_1")
    answer = f"The command printed {marker}."
    fake.script(Reply(text="I'll run it.", tool_calls=(call,)), Reply(text=answer))

    started = await sidecar_cli(s.sidecar_env, "start")
    assert started.rc == 0, started.describe()
    printed = await sidecar_cli(s.sidecar_env, "env")
    assert printed.rc == 0, printed.describe()
    cc_env = parse_env(printed.out)
    # The sidecar injects a key, so it asks for its token, in a header of its own; Claude Code
    # gets a placeholder login (no provider uses the client's credentials).
    assert cc_env["ANTHROPIC_CUSTOM_HEADERS"].startswith("x-sidecar-token: ")
    assert cc_env["ANTHROPIC_AUTH_TOKEN"] == "claude-sidecar"

    done = await run_claude(s, cc_env, f"Run `echo {marker}` with the Bash tool and tell me what it printed.", "--allowedTools", "Bash")
    assert done.rc == 0, done.describe()
    result = claude_result(done)
    assert result["is_error"] is False, result
    assert result["subtype"] == "success", result
    assert answer in result["result"], result
    assert result["num_turns"] == 2, result

    # Two chat completions, both valid Chat Completions requests (the fake checked them).
    bodies = fake.bodies()
    assert len(bodies) == 2, [(r.method, r.path) for r in fake.requests]
    assert fake.pending == 0
    first, second = bodies
    assert first["model"] == second["model"] == UPSTREAM_MODEL
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    assert {t["function"]["name"] for t in first["tools"]} >= {"Bash", "Read", "Edit"}
    # The tool call went back as an assistant tool_calls entry answered by a tool message.
    assistant = next(m for m in second["messages"] if m["role"] == "assistant" and m.get("tool_calls"))
    assert assistant["tool_calls"][0]["id"] == call.id
    tool = next(m for m in second["messages"] if m["role"] == "tool")
    assert tool["tool_call_id"] == call.id
    assert marker in tool["content"]

    # Credentials: the provider's key upstream, never Claude Code's.
    for req in fake.requests:
        assert req.header("authorization") == f"Bearer {OPENAI_KEY}"
        assert req.header("x-api-key") is None
        assert API_KEY not in str(req.headers) and API_KEY.encode() not in req.body

    rows = await ledger_rows(s.db_file, 2)
    assert len(rows) == 2, rows
    for row, stop in zip(rows, ("tool_use", "end_turn"), strict=True):
        assert (row["provider"], row["requested_model"], row["route"]) == ("openai", MODEL, "everything-to-openai"), row
        assert row["upstream_model"] == UPSTREAM_MODEL, row  # the model really used, not the echo
        assert (row["status"], row["outcome"], row["stop_reason"]) == (200, "ok", stop), row
        assert row["input_tokens"] > 1000 and row["output_tokens"] > 0, row
