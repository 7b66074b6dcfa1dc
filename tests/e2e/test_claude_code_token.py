"""End to end: the real Claude Code CLI with the sidecar's local token.

1. A provider holds an injected key (OpenAI) next to the Anthropic provider that forwards
   the client's own credentials: `claude-sidecar env` passes the token in
   ANTHROPIC_CUSTOM_HEADERS (merged with the user's own headers), Claude Code's own login
   (here ANTHROPIC_API_KEY) reaches Anthropic untouched, and the token never does.
2. A client set up with only ANTHROPIC_BASE_URL gets the sidecar's 401 with
   `x-should-retry: false` and stops at once, instead of retrying for minutes.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar.testing.fake_anthropic import FakeAnthropic, Text
from sidecar.testing.fake_openai import FakeOpenAI
from sidecar.testing.recorder import TcpRecorder
from tests.e2e.helpers import (
    API_KEY,
    Setup,
    claude_result,
    parse_env,
    run,
    run_claude,
    sidecar_cli,
    sidecar_port,
    stop_sidecar,
)

pytestmark = pytest.mark.e2e

OPENAI_KEY = "sk-openai-e2e-injected"
MY_HEADERS = "X-E2E-Team: blue"


@pytest.fixture
async def mixed_setup(tmp_path: Path) -> AsyncIterator[Setup]:
    """Anthropic (client credentials) and OpenAI (injected key) providers, and a git repo."""
    home = tmp_path / "sidecar"
    home.mkdir()
    claude_home = tmp_path / "claude-home"
    claude_home.mkdir()
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / "README.md").write_text("# e2e\n\nA scratch project for the sidecar's token e2e test.\n")
    async with FakeAnthropic() as fake, FakeOpenAI() as openai:
        cfg = home / "config.toml"
        cfg.write_text(
            f'[[providers]]\nname = "anthropic"\ntype = "anthropic"\nbase_url = "{fake.url}"\n'
            f'[[providers]]\nname = "openai"\ntype = "openai"\nbase_url = "{openai.base_url}"\n'
            '[[routes]]\nname = "gpt"\nmatch = { model = "gpt-*" }\ntargets = [{ provider = "openai", model = "gpt-fake-large" }]\n'
        )
        env = {
            **os.environ,
            "CLAUDE_SIDECAR_HOME": str(home),
            "CLAUDE_SIDECAR_CONFIG": str(cfg),
            "CLAUDE_SIDECAR_PORT": "0",
            "CLAUDE_SIDECAR_OPENAI_API_KEY": OPENAI_KEY,
            "ANTHROPIC_CUSTOM_HEADERS": MY_HEADERS,  # the user's own, kept by `env`
        }
        s = Setup(fake, home, env, claude_home, workdir)
        git = await run("git", "init", "-q", env=s.claude_env(), cwd=workdir)
        assert git.rc == 0, git.describe()
        try:
            yield s
        finally:
            await stop_sidecar(s)


async def start(s: Setup) -> dict[str, str]:
    """`claude-sidecar start`, then `env`: the variables for Claude Code."""
    started = await sidecar_cli(s.sidecar_env, "start")
    assert started.rc == 0, started.describe()
    printed = await sidecar_cli(s.sidecar_env, "env")
    assert printed.rc == 0, printed.describe()
    return parse_env(printed.out)


async def test_claude_codes_own_login_reaches_anthropic_and_the_token_never_does(mixed_setup: Setup) -> None:
    s = mixed_setup
    s.fake.script(Text("Hello from the forwarded login."))
    s.fake.default = Text("Hello again.")
    cc_env = await start(s)
    token = cc_env["ANTHROPIC_CUSTOM_HEADERS"].splitlines()[-1].removeprefix("x-sidecar-token: ")
    assert cc_env["ANTHROPIC_CUSTOM_HEADERS"] == f"{MY_HEADERS}\nx-sidecar-token: {token}" and len(token) >= 32
    assert "ANTHROPIC_AUTH_TOKEN" not in cc_env  # Claude Code keeps its own login

    done = await run_claude(s, cc_env, "Say hello.")

    assert done.rc == 0, done.describe()
    result = claude_result(done)
    assert result["is_error"] is False, result
    assert s.fake.requests, "nothing reached the Anthropic upstream"
    for req in s.fake.requests:
        sent = "\n".join(f"{k}: {v}" for k, v in req.headers)
        assert token not in sent, sent
        assert req.header("x-sidecar-token") is None
        assert req.header("x-api-key") == API_KEY  # the client's own credential, untouched
        assert req.header("x-e2e-team") == "blue"


async def test_a_client_without_the_token_stops_at_once_on_the_sidecars_401(mixed_setup: Setup) -> None:
    s = mixed_setup
    cc_env = await start(s)
    async with TcpRecorder(sidecar_port(cc_env)) as recorder:
        only_base_url = {"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{recorder.port}"}
        done = await run_claude(s, only_base_url, "Say hello.")

    result = claude_result(done)
    assert done.rc == 1 and result["is_error"] is True, done.describe()
    assert "local token" in result["result"], result
    posts = [(req, resp) for req, resp in recorder.exchanges() if req.method == "POST"]
    assert posts and all(resp.status == 401 and resp.header("x-should-retry") == "false" for _, resp in posts), posts
    bodies = [req.body for req, _ in posts]
    assert len(bodies) == len(set(bodies)), "Claude Code retried a request the sidecar refused"
    assert s.fake.requests == []
