"""End to end: the real Claude Code CLI talks to a fake Anthropic upstream through the sidecar.

The sidecar runs as its own daemon, started and stopped through the real CLI
(`claude-sidecar start|env|run|usage|stop`). A `TcpRecorder` between Claude Code and the
sidecar records the exact bytes Claude Code sent, so the test can check that the upstream
received the same bodies and headers, and that the ledger metered every request.

Claude Code comes from CLAUDE_SIDECAR_CLAUDE_BIN (exported by the repo's test script, which
installs it under .cache/npm); without it these tests fail rather than skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sidecar.testing import anthropic_sse as sse
from sidecar.testing.fake_anthropic import FakeAnthropic, RecordedRequest, Text, ToolUse
from sidecar.testing.harness import anthropic_config
from sidecar.testing.recorder import RawRequest, TcpRecorder

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CLAUDE_BIN = REPO / ".cache" / "npm" / "node_modules" / ".bin" / "claude"
# Read at import: the autouse hermetic_env fixture strips every CLAUDE_SIDECAR_* variable.
CLAUDE_BIN_ENV = os.environ.get("CLAUDE_SIDECAR_CLAUDE_BIN")
CLAUDE_TIMEOUT = 120.0
CLI_TIMEOUT = 60.0
LEDGER_WAIT = 10.0  # seconds for the daemon's ledger writer to commit a row
API_KEY = "sk-ant-test"
MODEL = "claude-opus-4-8"  # Claude Code's default main model with a custom base URL
# USD per million tokens for MODEL.
OPUS_INPUT_PRICE = 5.0
OPUS_OUTPUT_PRICE = 25.0
# Headers that must reach the upstream exactly as Claude Code sent them.
FORWARDED_HEADER = re.compile(
    r"^(anthropic-.*|x-claude-code-.*|x-stainless-.*|user-agent|x-app|x-api-key|content-type|accept)$"
)


def claude_bin() -> Path:
    """The Claude Code executable; fails the test (never skips) when it is missing."""
    path = Path(CLAUDE_BIN_ENV) if CLAUDE_BIN_ENV else DEFAULT_CLAUDE_BIN
    if not (path.is_file() and os.access(path, os.X_OK)):
        source = "CLAUDE_SIDECAR_CLAUDE_BIN" if CLAUDE_BIN_ENV else "the default location"
        pytest.fail(
            f"Claude Code CLI not found at {path} (from {source}). Install it with the repo's "
            "test script (npm install --prefix .cache/npm @anthropic-ai/claude-code@<pinned>) "
            "or set CLAUDE_SIDECAR_CLAUDE_BIN to its path.",
            pytrace=False,
        )
    return path


# ---------------------------------------------------------------- processes


@dataclass
class Done:
    """A finished child process."""

    rc: int
    out: str
    err: str

    def describe(self) -> str:
        return f"rc={self.rc}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


async def run(*argv: str | Path, env: dict[str, str], cwd: Path | None = None,
              time_limit: float = CLI_TIMEOUT) -> Done:  # fmt: skip
    """Run a child without blocking the loop (the fake and the recorder live in it)."""
    proc = await asyncio.create_subprocess_exec(
        *map(str, argv),
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), time_limit)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        pytest.fail(
            f"{' '.join(map(str, argv))} timed out after {time_limit:.0f} s\n"
            + Done(-1, out.decode(errors="replace"), err.decode(errors="replace")).describe()
        )
    assert proc.returncode is not None
    return Done(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


async def sidecar_cli(env: dict[str, str], *args: str) -> Done:
    """`claude-sidecar ARGS`, as the console script runs it."""
    return await run(sys.executable, "-m", "sidecar", *args, env=env)


@dataclass
class Setup:
    """Everything one test needs: the fake upstream, the sidecar's env, Claude Code's dirs."""

    fake: FakeAnthropic
    sidecar_home: Path
    sidecar_env: dict[str, str]
    claude_home: Path
    workdir: Path

    def claude_env(self, **extra: str) -> dict[str, str]:
        """An `env -i`-like environment for Claude Code."""
        return {
            "PATH": os.environ.get("PATH") or os.defpath,
            "HOME": str(self.claude_home),
            "ANTHROPIC_API_KEY": API_KEY,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            **extra,
        }

    @property
    def db_file(self) -> Path:
        return self.sidecar_home / "data" / "sidecar.db"

    @property
    def state_file(self) -> Path:
        return self.sidecar_home / "state" / "sidecar.json"


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    """A fake upstream, a sidecar config pointing at it, and a git repo for Claude Code."""
    home = tmp_path / "sidecar"
    home.mkdir()
    claude_home = tmp_path / "claude-home"
    claude_home.mkdir()
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / "README.md").write_text("# e2e\n\nA scratch project for the sidecar's e2e test.\n")
    async with FakeAnthropic() as fake:
        config = home / "config.toml"
        config.write_text(anthropic_config(fake.url))
        env = {
            **os.environ,
            "CLAUDE_SIDECAR_HOME": str(home),
            "CLAUDE_SIDECAR_CONFIG": str(config),
            "CLAUDE_SIDECAR_PORT": "0",
        }
        s = Setup(fake, home, env, claude_home, workdir)
        git = await run("git", "init", "-q", env=s.claude_env(), cwd=workdir)
        assert git.rc == 0, git.describe()
        try:
            yield s
        finally:
            await stop_sidecar(s)


async def stop_sidecar(s: Setup) -> None:
    """`claude-sidecar stop`; if that fails, kill the daemon this test started, by its pid."""
    pid = None
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        pid = int(json.loads(s.state_file.read_text())["pid"])
    done = await sidecar_cli(s.sidecar_env, "stop")
    if pid is not None and _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert done.rc == 0, f"claude-sidecar stop failed: {done.describe()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def parse_env(text: str) -> dict[str, str]:
    """The variables of `claude-sidecar env` output (`export K=V` lines, shell-quoted)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        words = shlex.split(line)
        assert len(words) == 2 and words[0] == "export", f"unexpected env line {line!r}"
        key, sep, value = words[1].partition("=")
        assert sep, f"unexpected env line {line!r}"
        out[key] = value
    return out


def claude_result(done: Done) -> dict[str, Any]:
    """Claude Code's `--output-format json` result object."""
    lines = [ln for ln in done.out.splitlines() if ln.strip().startswith("{")]
    assert lines, f"Claude Code printed no JSON result: {done.describe()}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert result.get("type") == "result", result
    return result


async def ledger_rows(db_file: Path, count: int) -> list[dict[str, Any]]:
    """The ledger's usage rows, oldest first, once there are `count` (rows are written async)."""
    deadline = time.monotonic() + LEDGER_WAIT
    rows: list[dict[str, Any]] = []
    while True:
        # No file or no table yet: OperationalError, try again.
        with contextlib.suppress(sqlite3.OperationalError):
            conn = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
            try:
                conn.row_factory = sqlite3.Row
                rows = [dict(r) for r in conn.execute("SELECT * FROM usage ORDER BY ts")]
            finally:
                conn.close()
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


def messages_posts(requests: list[RecordedRequest]) -> list[RecordedRequest]:
    return [r for r in requests if r.method == "POST" and r.path == "/v1/messages"]


def forwarded_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted((k.lower(), v) for k, v in headers if FORWARDED_HEADER.match(k.lower()))


def tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        block
        for message in body["messages"]
        if message["role"] == "user" and isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]


def block_text(content: Any) -> str:
    """The text of a tool_result's content (a string or a list of text blocks)."""
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if isinstance(b, dict))


def opus_cost(input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * OPUS_INPUT_PRICE + output_tokens * OPUS_OUTPUT_PRICE) / 1e6


# ---------------------------------------------------------------- tests


async def test_tool_round_trip_through_sidecar(setup: Setup) -> None:
    """Claude Code -> recorder -> sidecar daemon -> fake, with one Bash tool round trip."""
    claude = claude_bin()
    s = setup
    marker = f"sidecar-e2e-{secrets.token_hex(6)}"
    tool_id = sse.new_id("toolu_01")
    tool = ToolUse(
        name="Bash",
        input={"command": f"echo {marker}", "description": "Print the e2e marker"},
        id=tool_id,
    )
    answer = Text(f"The command printed {marker}.")
    s.fake.script(tool, answer)

    started = await sidecar_cli(s.sidecar_env, "start")
    assert started.rc == 0, f"claude-sidecar start failed: {started.describe()}"
    state = json.loads(s.state_file.read_text())
    sidecar_url = state["url"]
    assert sidecar_url in started.out, started.out

    printed = await sidecar_cli(s.sidecar_env, "env")
    assert printed.rc == 0, printed.describe()
    cc_env = parse_env(printed.out)
    assert cc_env["ANTHROPIC_BASE_URL"] == sidecar_url
    # The sidecar forwards the client's own key, so it asks Claude Code for no token.
    assert "ANTHROPIC_AUTH_TOKEN" not in cc_env, cc_env

    port = int(sidecar_url.rsplit(":", 1)[1])
    async with TcpRecorder(port) as recorder:
        cc_env["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{recorder.port}"
        t0 = time.monotonic()
        done = await run(
            claude,
            "-p", f"Run `echo {marker}` with the Bash tool and tell me what it printed.",
            "--output-format", "json",
            "--allowedTools", "Bash",
            env=s.claude_env(**cc_env),
            cwd=s.workdir,
            time_limit=CLAUDE_TIMEOUT,
        )  # fmt: skip
        elapsed = time.monotonic() - t0
    assert done.rc == 0, f"Claude Code failed after {elapsed:.1f} s: {done.describe()}"

    # Claude Code's answer is the fake's final text.
    result = claude_result(done)
    assert result["is_error"] is False, result
    assert result["subtype"] == "success", result
    assert answer.text in result["result"], result
    session_id = result["session_id"]

    # The upstream saw exactly the two model calls, and the second carries the tool's output.
    posts = messages_posts(s.fake.requests)
    others = [r for r in s.fake.requests if r not in posts and r.method != "HEAD"]
    assert len(posts) == 2, [(r.method, r.path) for r in s.fake.requests]
    assert not others, [(r.method, r.path) for r in others]
    assert s.fake.pending == 0
    first, second = (p.json() for p in posts)
    assert first["model"] == second["model"] == MODEL
    assert not tool_results(first)
    results = tool_results(second)
    assert [r["tool_use_id"] for r in results] == [tool_id], results
    assert marker in block_text(results[0]["content"]), results[0]
    assert not results[0].get("is_error"), results[0]

    # Byte-identical bodies and identical headers, against what Claude Code put on the wire.
    sent: list[RawRequest] = [
        r for r in recorder.requests() if r.method == "POST" and r.target.startswith("/v1/messages")
    ]
    assert len(sent) == 2, [(r.method, r.target) for r in recorder.requests()]
    for received in posts:
        matches = [r for r in sent if r.body == received.body]
        assert len(matches) == 1, "the upstream got a body Claude Code did not send byte for byte"
        original = matches[0]
        assert original.target == received.path + (
            "?" + received.query_string if received.query_string else ""
        )
        want = forwarded_headers(original.headers)
        assert ("x-api-key", API_KEY) in want, want
        assert ("x-claude-code-session-id", session_id) in want, want
        assert forwarded_headers(received.headers) == want

    # The ledger: one row per request, metered from the fake's usage and priced as Opus.
    expected = [
        (sse.estimate_tokens(posts[0].body), tool.render().output_tokens, "tool_use"),
        (sse.estimate_tokens(posts[1].body), answer.render().output_tokens, "end_turn"),
    ]
    rows = await ledger_rows(s.db_file, 2)
    assert len(rows) == 2, rows
    for row, (input_tokens, output_tokens, stop_reason) in zip(rows, expected, strict=True):
        assert row["session_id"] == session_id, row
        assert row["requested_model"] == MODEL, row
        assert row["upstream_model"] in (None, MODEL), row
        assert row["agent_id"] is None, row
        assert row["provider"] == "anthropic", row
        assert row["endpoint"] == "/v1/messages", row
        assert row["stream"] == 1, row
        assert row["status"] == 200, row
        assert row["outcome"] == "ok", row
        assert row["stop_reason"] == stop_reason, row
        assert (row["input_tokens"], row["output_tokens"]) == (input_tokens, output_tokens), row
        assert (row["cache_read_tokens"] or 0, row["cache_write_tokens"] or 0) == (0, 0), row
        assert row["cost_usd"] > 0, row
        assert row["cost_usd"] == pytest.approx(opus_cost(input_tokens, output_tokens)), row

    total_in = sum(e[0] for e in expected)
    total_out = sum(e[1] for e in expected)
    total_cost = opus_cost(total_in, total_out)
    report = await sidecar_cli(s.sidecar_env, "usage", "session", "--json")
    assert report.rc == 0, report.describe()
    sessions = json.loads(report.out)
    assert len(sessions) == 1, sessions
    assert sessions[0]["key"] == session_id
    assert sessions[0]["requests"] == 2
    assert (sessions[0]["input_tokens"], sessions[0]["output_tokens"]) == (total_in, total_out)
    assert sessions[0]["cost_usd"] == pytest.approx(total_cost)

    # Claude Code's own accounting (summed over both turns, priced from its own table) agrees.
    usage = result["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (total_in, total_out), usage
    assert (usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]) == (0, 0)
    assert result["num_turns"] == 2, result
    assert result["total_cost_usd"] == pytest.approx(total_cost, rel=1e-3), result


async def test_run_execs_claude_against_sidecar(setup: Setup) -> None:
    """`claude-sidecar run -- claude -p ...` starts the daemon and points Claude Code at it."""
    claude = claude_bin()
    s = setup
    answer = Text("Hello through claude-sidecar run.")
    s.fake.script(answer)
    # `run` execs Claude Code with its own environment plus the sidecar's, so start from the
    # clean Claude Code env and add only what the sidecar CLI needs to find its home.
    sidecar_vars = {k: v for k, v in s.sidecar_env.items() if k.startswith("CLAUDE_SIDECAR_")}
    keyring_vars = {k: v for k, v in os.environ.items() if "KEYRING" in k}
    env = {**s.claude_env(), **sidecar_vars, **keyring_vars}
    done = await run(
        sys.executable, "-m", "sidecar", "run", "--",
        claude, "-p", "Say hello.", "--output-format", "json",
        env=env,
        cwd=s.workdir,
        time_limit=CLAUDE_TIMEOUT,
    )  # fmt: skip
    assert done.rc == 0, done.describe()
    assert "claude-sidecar started at" in done.err, done.err
    result = claude_result(done)
    assert result["is_error"] is False, result
    assert result["result"] == answer.text, result
    session_id = result["session_id"]

    posts = messages_posts(s.fake.requests)
    assert len(posts) == 1, [(r.method, r.path) for r in s.fake.requests]
    assert posts[0].header("x-claude-code-session-id") == session_id
    assert posts[0].header("x-api-key") == API_KEY

    rows = await ledger_rows(s.db_file, 1)
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["session_id"] == session_id, row
    assert (row["status"], row["outcome"], row["stop_reason"]) == (200, "ok", "end_turn"), row
    input_tokens = sse.estimate_tokens(posts[0].body)
    output_tokens = answer.render().output_tokens
    assert (row["input_tokens"], row["output_tokens"]) == (input_tokens, output_tokens), row
    assert row["cost_usd"] == pytest.approx(opus_cost(input_tokens, output_tokens)), row
