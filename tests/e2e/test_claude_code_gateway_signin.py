"""End to end with the newest pinned Claude Code (2.1.332): signed in to the sidecar as its
gateway, through `claude-sidecar run -- claude` (a token handed over on an inherited socket,
CLAUDE_CODE_GATEWAY_TOKEN_FILE_DESCRIPTOR) and through the real `/login` device flow driven
in tmux, as a developer runs it.

The sidecar holds the provider key (a signed-in client sends no Anthropic credential).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sidecar.testing.fake_anthropic import Text, ToolUse
from sidecar.testing.recorder import TcpRecorder
from tests.e2e.helpers import (
    CLAUDE_TIMEOUT,
    MODEL,
    Done,
    Setup,
    claude_latest_bin,
    claude_result,
    posts,
    run,
    settled_ledger_rows,
    sidecar_cli,
    tool_results,
)

pytestmark = pytest.mark.e2e
UPSTREAM_KEY = "sk-ant-upstream-held-by-the-sidecar"


def configure(s: Setup, extra: str = "") -> None:
    """A provider that holds its own key, and `extra` config."""
    s.sidecar_env["FAKE_UPSTREAM_KEY"] = UPSTREAM_KEY
    (s.sidecar_home / "config.toml").write_text(
        f'[[providers]]\nname = "anthropic"\ntype = "anthropic"\nbase_url = "{s.fake.url}"\n'
        f'keys = ["env:FAKE_UPSTREAM_KEY"]\n{extra}'
    )


async def start(s: Setup) -> str:
    """`claude-sidecar start`; the sidecar's URL."""
    done = await sidecar_cli(s.sidecar_env, "start")
    assert done.rc == 0, done.describe()
    return str(json.loads(s.state_file.read_text())["url"])


async def run_signed_in(s: Setup, prompt: str, *args: str) -> Done:
    """`claude-sidecar run -- claude -p PROMPT --output-format json ARGS` with the newest CLI."""
    env = {**s.claude_env(), **{k: v for k, v in s.sidecar_env.items() if k.startswith("CLAUDE_SIDECAR_")},
           "CLAUDE_SIDECAR_CONNECT": "auto"}  # fmt: skip
    return await run(
        sys.executable, "-m", "sidecar", "run", "--", claude_latest_bin(), "-p", prompt, "--output-format", "json",
        "--model", MODEL, *args, env=env, cwd=s.workdir, time_limit=CLAUDE_TIMEOUT,
    )  # fmt: skip


def sent_headers(s: Setup) -> list[dict[str, str]]:
    return [{k.lower(): v for k, v in r.headers} for r in posts(s.fake)]


async def test_run_signs_claude_code_in_and_the_gateway_token_never_leaves(setup: Setup) -> None:
    s = setup
    configure(s, "[budget]\ndaily_usd = 10.0\n")
    s.fake.script(Text("first", usage={"input_tokens": 1_600_000, "output_tokens": 0}), Text("second"))
    url = await start(s)
    first = await run_signed_in(s, "Say first.")
    second = await run_signed_in(s, "Say second.")
    assert claude_result(first)["result"] == "first", first.describe()
    assert claude_result(second)["result"] == "second", second.describe()
    for headers, request in zip(sent_headers(s), posts(s.fake), strict=True):
        # The sidecar's key went upstream; neither the gateway token nor the user's own key did.
        assert headers["x-api-key"] == UPSTREAM_KEY and "authorization" not in headers
        assert "csgw_" not in json.dumps(request.headers) and "sk-ant-test" not in json.dumps(request.headers)
        assert "cc_gateway=env" in request.body.decode()  # Claude Code ran signed in to a gateway
    grants = json.loads((s.sidecar_home / "state" / "gateway-tokens.json").read_text())
    assert [g["surface"] for g in grants.values()] == ["claude-sidecar run"] * 2
    # The budget past 80%, as /usage and the status line read it.
    token = (s.sidecar_home / "state" / "token").read_text().strip()
    usage = await run("curl", "-s", "-H", f"Authorization: Bearer {token}", url + "/api/oauth/usage", env=dict(os.environ))
    limits = json.loads(usage.out)["limits"]
    assert [(r["group"], r["percent"]) for r in limits] == [("daily", 80)], usage.out
    rows = await settled_ledger_rows(s.db_file, 2)
    assert [r["status"] for r in rows] == [200, 200]


async def test_claude_codes_telemetry_arrives_and_joins_the_ledger_rows_of_its_session(setup: Setup) -> None:
    s = setup
    configure(s)
    s.fake.script(Text("measured", usage={"input_tokens": 20_000, "output_tokens": 10}))
    url = await start(s)
    done = await run_signed_in(s, "Say measured.")
    assert claude_result(done)["result"] == "measured", done.describe()
    [row] = await settled_ledger_rows(s.db_file, 1)
    token = (s.sidecar_home / "state" / "token").read_text().strip()
    deadline = time.monotonic() + 20
    while True:  # the exporter flushes as Claude Code exits; its request may still be in flight
        report = await run("curl", "-s", "-H", f"Authorization: Bearer {token}", url + "/sidecar/v1/claude-code/sessions", env=dict(os.environ))
        sessions = json.loads(report.out)["sessions"]
        if sessions or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    [session] = sessions
    assert session["session_id"] == row["session_id"] and session["requests"] == 1
    assert session["cost_usd"] == pytest.approx(row["cost_usd"])
    assert session["api_requests"] >= 1 and session["client_cost_usd"] > 0, session
    assert session["matched_requests"] == 1, session  # its request id names the very usage row


async def test_an_exhausted_budget_stops_the_signed_in_cli_with_the_sidecars_sentence(setup: Setup) -> None:
    s = setup
    configure(s, '[usage]\ntimezone = "Asia/Kolkata"\n[budget]\ndaily_usd = 1.0\n')
    s.fake.script(Text("spent", usage={"input_tokens": 250_000, "output_tokens": 0}), Text("never asked for"))
    await start(s)
    assert claude_result(await run_signed_in(s, "Spend."))["result"] == "spent"
    done = await run_signed_in(s, "Spend more.")
    result = claude_result(done)
    assert done.rc == 1 and result["is_error"] is True, done.describe()
    # Printed as the sidecar wrote it: no "API Error" prefix, no retry.
    assert re.fullmatch(
        r"claude-sidecar: the daily budget of \$1\.00 is used up \(\$1\.25 spent today\); it resets at "
        r"\d{4}-\d\d-\d\d 00:00 Asia/Kolkata \(in [^)]+\), so wait until then or raise budget\.daily_usd "
        r"in the sidecar's config\.",
        str(result["result"]),
    ), result
    assert len(posts(s.fake)) == 1
    rows = await settled_ledger_rows(s.db_file, 2)
    assert [(r["status"], r["error_type"]) for r in rows] == [(200, None), (429, "billing_error")]


async def refused_signed_in(s: Setup, policy: str, prompt: str) -> tuple[Done, list[tuple[Any, Any]]]:
    """`claude -p prompt` (newest CLI) signed in with a minted token, through a recorder: the
    result and every model call it made."""
    configure(s, policy)
    url = await start(s)
    token = (s.sidecar_home / "state" / "token").read_text().strip()
    minted = await run("curl", "-s", "-X", "POST", "-H", f"Authorization: Bearer {token}", url + "/sidecar/v1/gateway/token", env=dict(os.environ))
    access = json.loads(minted.out)["access_token"]
    async with TcpRecorder(int(url.rsplit(":", 1)[1])) as recorder:
        env = s.claude_env(CLAUDE_CODE_USE_GATEWAY="1", ANTHROPIC_BASE_URL=f"http://127.0.0.1:{recorder.port}", ANTHROPIC_AUTH_TOKEN=access)
        env.pop("ANTHROPIC_API_KEY")
        done = await run(claude_latest_bin(), "-p", prompt, "--output-format", "json", "--model", MODEL,
                         env=env, cwd=s.workdir, time_limit=CLAUDE_TIMEOUT)  # fmt: skip
    calls = [(q, r) for q, r in recorder.exchanges() if q.method == "POST" and q.target.startswith("/v1/messages")]
    return done, calls


async def test_a_guardrail_block_ends_the_signed_in_cli_with_the_sidecars_message_and_no_retry(setup: Setup) -> None:
    s = setup
    done, calls = await refused_signed_in(s, '[guardrails]\ndetectors = { github_token = "block" }\n',
                                          "Deploy with ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8 please.")  # fmt: skip
    result = claude_result(done)
    assert done.rc == 1 and "claude-sidecar: the prompt holds a GitHub token" in str(result["result"]), done.describe()
    assert [r.status for _, r in calls] == [400]  # one request: no retry, no fallback model
    assert json.loads(calls[0][1].body)["error"]["type"] == "policy_blocked"
    assert posts(s.fake) == []


async def test_a_denied_model_ends_the_signed_in_cli_with_the_sidecars_message(setup: Setup) -> None:
    """Signed in, Claude Code 2.1.332 takes a 400 it does not recognise as a platform that
    refuses one of its betas or fields and sends the request again without each in turn
    (`[thinking]`, `[mid-conv-system]`, `[ToolSearch]` fallbacks; docs/claude-code.md says
    which CLI code path and why a denied model stays a plain `400 invalid_request_error`).
    Every re-send is refused here and counted in the ledger; none goes upstream.
    `policy_blocked` is recognised and does not set that off (the guardrail test above)."""
    s = setup
    done, calls = await refused_signed_in(s, '[policy]\nmodels = ["claude-sonnet-*"]\n', "Say hi.")
    result = claude_result(done)
    message = "claude-sidecar: the model 'claude-opus-4-8' is not allowed by the policy (allowed: claude-sonnet-*)"
    assert done.rc == 1 and message in str(result["result"]), done.describe()
    assert all(r.status == 400 for _, r in calls) and len(calls) <= 12, [r.status for _, r in calls]
    assert all(json.loads(r.body)["error"]["type"] == "invalid_request_error" for _, r in calls)
    # The re-sends are the CLI's beta fallback: the first request carries the betas, later ones drop them.
    betas = [set((q.header("anthropic-beta") or "").split(",")) for q, _ in calls]
    assert {"thinking-token-count-2026-05-13", "tool-search-tool-2025-10-19"} <= betas[0], betas[0]
    assert all(b <= betas[0] for b in betas[1:]) and any(b < betas[0] for b in betas[1:]), betas
    # The sidecar saw (and the ledger holds) exactly the requests the client sent, all refused here.
    rows = await settled_ledger_rows(s.db_file, len(calls))
    assert [(r["status"], r["error_type"]) for r in rows] == [(400, "invalid_request_error")] * len(calls)
    assert posts(s.fake) == []


async def test_a_bad_gateway_token_fails_at_once_without_retrying(setup: Setup) -> None:
    s = setup
    configure(s)
    url = await start(s)
    port = int(url.rsplit(":", 1)[1])
    async with TcpRecorder(port) as recorder:
        env = s.claude_env(CLAUDE_CODE_USE_GATEWAY="1", ANTHROPIC_BASE_URL=f"http://127.0.0.1:{recorder.port}",
                           ANTHROPIC_AUTH_TOKEN="csgw_revoked-or-never-issued")  # fmt: skip
        env.pop("ANTHROPIC_API_KEY")
        done = await run(claude_latest_bin(), "-p", "Say hi.", "--output-format", "json", env=env, cwd=s.workdir, time_limit=60)
    assert done.rc == 1, done.describe()
    model_calls = [(q, r) for q, r in recorder.exchanges() if q.method == "POST" and q.target.startswith("/v1/messages")]
    assert [r.status for _, r in model_calls] == [401], [(q.target, r.status) for q, r in recorder.exchanges()]
    assert model_calls[0][1].header("x-should-retry") == "false"
    assert posts(s.fake) == []


async def test_settings_from_the_config_reach_the_cli_through_run(setup: Setup) -> None:
    s = setup
    configure(s, '[claude_code.settings.permissions]\ndeny = ["Bash"]\n')
    s.fake.script(
        ToolUse(name="Bash", input={"command": "echo governed > governed.txt", "description": "Write a file"}),
        Text("done"),
    )
    await start(s)
    done = await run_signed_in(s, "Write governed.txt with the Bash tool.")
    assert claude_result(done)["result"] == "done", done.describe()
    # A deny rule for a whole tool takes it out of the session: it is not offered to the model,
    # and the call the (scripted) model makes anyway is refused by Claude Code itself.
    first, second = (r.json() for r in posts(s.fake))
    assert "Bash" not in [t.get("name") for t in first["tools"]]
    [refused] = tool_results(second)
    assert refused.get("is_error") is True and "Bash is disabled for this session" in str(refused["content"])
    assert not (s.workdir / "governed.txt").exists()


# ---------------------------------------------------------------- /login in tmux


class Tmux:
    """One tmux session running Claude Code interactively."""

    def __init__(self, name: str, socket: Path) -> None:
        self.name = name
        self.socket = str(socket)

    async def cmd(self, *args: str) -> str:
        done = await run("tmux", "-S", self.socket, *args, env=dict(os.environ))
        return done.out

    async def screen(self) -> str:
        return await self.cmd("capture-pane", "-p", "-t", self.name)

    async def wait_for(self, pattern: str, within: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + within
        while True:
            text = await self.screen()
            if m := re.search(pattern, text):
                return m
            if time.monotonic() > deadline:
                pytest.fail(f"{pattern!r} did not appear; the screen:\n{text}")
            await asyncio.sleep(0.3)

    async def keys(self, *keys: str) -> None:
        await self.cmd("send-keys", "-t", self.name, *keys)


async def test_the_login_device_flow_settings_and_the_usage_notice_in_tmux(setup: Setup, tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed for the interactive sign-in test (apt-get install tmux)", pytrace=False)
    s = setup
    configure(s, "[budget]\ndaily_usd = 10.0\n[claude_code.settings.permissions]\ndeny = [\"Bash\"]\n")
    # One answer costs $8 of the $10 budget (whichever request gets it); the rest cost cents.
    s.fake.script(Text("answered through the sidecar", usage={"input_tokens": 1_600_000, "output_tokens": 0}))
    s.fake.default = Text("answered through the sidecar", usage={"input_tokens": 1000, "output_tokens": 5})
    url = await start(s)
    home = s.claude_home
    (home / ".claude").mkdir(exist_ok=True)
    (home / ".claude" / "settings.json").write_text(json.dumps({"forceLoginMethod": "gateway", "forceLoginGatewayUrl": url}))
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True, "projects": {str(s.workdir): {"hasTrustDialogAccepted": True}}}))
    env = {k: v for k, v in s.claude_env(TERM="xterm-256color").items() if k != "ANTHROPIC_API_KEY"}
    command = " ".join(["env", "-i", *(f"{k}={v}" for k, v in env.items()), str(claude_latest_bin())])
    t = Tmux("gw", tmp_path / "tmux.sock")
    await t.cmd("new-session", "-d", "-s", "gw", "-x", "160", "-y", "45", "-c", str(s.workdir), command)
    try:
        await t.wait_for(r"Not logged in")
        await t.keys("/login")
        await asyncio.sleep(0.5)
        await t.keys("Enter")
        await t.wait_for(r"Gateway:\s+" + re.escape(url))
        await t.keys("Enter")
        await t.wait_for(r"Trust gateway 127\.0\.0\.1\?")
        await t.keys("Up")
        await asyncio.sleep(0.3)
        await t.keys("Enter")
        code = (await t.wait_for(r"Code:\s+([BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4})")).group(1)
        await t.wait_for(re.escape(f"claude-sidecar login-approve {code}"))  # the sidecar's notice
        approved = await sidecar_cli(s.sidecar_env, "login-approve", code)
        assert approved.rc == 0, approved.describe()
        await t.wait_for(r"Connected to Cloud gateway")
        await t.keys("Enter")
        await t.wait_for(r"Opus [\d.]+ · Cloud gateway")
        for n in (1, 2):  # the first answer spends 80% of the budget; the second is past 75%
            await asyncio.sleep(2.0)  # the prompt takes keys once the sign-in screen is gone
            await t.keys(f"Say hello {n}.")
            await asyncio.sleep(0.5)
            await t.keys("Enter")
            await t.wait_for(rf"Say hello {n}\.\s*\n\s*● answered through the sidecar")
        notice = await t.wait_for(r"You've used (\d+)% of your usage credits")
        assert int(notice.group(1)) >= 75
    finally:
        await t.cmd("kill-server")
    # The managed settings from [claude_code.settings] reached the client.
    applied = json.loads((home / ".claude" / "remote-settings.json").read_text())
    assert applied == {"permissions": {"deny": ["Bash"]}}
    for headers in sent_headers(s):
        assert headers["x-api-key"] == UPSTREAM_KEY and "authorization" not in headers

