"""Shared helpers of the end-to-end tests: the real Claude Code CLI, the sidecar daemon, the fake.

The sidecar runs as its own daemon, started and stopped through the real CLI
(`claude-sidecar start|env|run|usage|stop`); Claude Code runs as a child with an `env -i`-like
environment; the fake Anthropic upstream runs in the test's own loop.

Claude Code comes from CLAUDE_SIDECAR_CLAUDE_BIN (exported by the repo's test script, which
installs it under .cache/npm); without it these tests fail rather than skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sidecar.testing.fake_anthropic import FakeAnthropic, RecordedRequest

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CLAUDE_BIN = REPO / ".cache" / "npm" / "node_modules" / ".bin" / "claude"
# Read at import, before any fixture touches the environment.
CLAUDE_BIN_ENV = os.environ.get("CLAUDE_SIDECAR_CLAUDE_BIN")
# The newest Claude Code the gateway-protocol tests use (pinned in scripts/test).
DEFAULT_CLAUDE_LATEST_BIN = REPO / ".cache" / "npm-latest" / "node_modules" / ".bin" / "claude"
CLAUDE_LATEST_BIN_ENV = os.environ.get("CLAUDE_SIDECAR_CLAUDE_LATEST_BIN")
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


def claude_latest_bin() -> Path:
    """The newest pinned Claude Code (gateway sign-in); fails the test (never skips) when missing."""
    path = Path(CLAUDE_LATEST_BIN_ENV) if CLAUDE_LATEST_BIN_ENV else DEFAULT_CLAUDE_LATEST_BIN
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"the newest pinned Claude Code CLI is not at {path}: install it with the repo's test script "
            "(npm install --prefix .cache/npm-latest @anthropic-ai/claude-code@<pinned>) or set "
            "CLAUDE_SIDECAR_CLAUDE_LATEST_BIN to its path.",
            pytrace=False,
        )
    return path


# ---------------------------------------------------------------- the fake upstream


def posts(fake: FakeAnthropic) -> list[RecordedRequest]:
    """Every POST /v1/messages the fake received, in order."""
    return [r for r in fake.requests if is_messages_post(r)]


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


async def start_sidecar(s: Setup) -> dict[str, str]:
    """`claude-sidecar start`, then `claude-sidecar env`: the variables for Claude Code."""
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
    return cc_env


def sidecar_port(cc_env: dict[str, str]) -> int:
    """The sidecar's port, from the ANTHROPIC_BASE_URL that `claude-sidecar env` printed."""
    return int(cc_env["ANTHROPIC_BASE_URL"].rsplit(":", 1)[1])


async def run_claude(s: Setup, cc_env: dict[str, str], prompt: str, *args: str) -> Done:
    """`claude -p PROMPT --output-format json ARGS` in the test project, against `cc_env`."""
    return await run(
        claude_bin(), "-p", prompt, "--output-format", "json", *args,
        env=s.claude_env(**cc_env),
        cwd=s.workdir,
        time_limit=CLAUDE_TIMEOUT,
    )  # fmt: skip


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
    """The variables of `claude-sidecar env` output (`export K=V` commands, shell-quoted; a
    quoted value may span lines, as ANTHROPIC_CUSTOM_HEADERS does)."""
    out: dict[str, str] = {}
    words = shlex.split(text)
    assert len(words) % 2 == 0, f"unexpected env output {text!r}"
    for verb, assignment in zip(words[::2], words[1::2], strict=True):
        key, sep, value = assignment.partition("=")
        assert verb == "export" and sep, f"unexpected env output {text!r}"
        out[key] = value
    return out


# ---------------------------------------------------------------- results


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


async def settled_ledger_rows(db_file: Path, count: int) -> list[dict[str, Any]]:
    """Exactly the ledger's rows once `count` are there and a late one had time to land.

    Call it after Claude Code exited: every request is finished by then, and the ledger
    writer commits in batches every 200 ms, so half a second more shows any extra row.
    """
    rows = await ledger_rows(db_file, count)
    assert len(rows) >= count, rows
    await asyncio.sleep(0.5)
    rows = await ledger_rows(db_file, count)
    assert len(rows) == count, rows
    return rows


def is_messages_post(r: RecordedRequest) -> bool:
    return r.method == "POST" and r.path == "/v1/messages"


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
