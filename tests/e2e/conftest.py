"""Fixtures of the end-to-end tests (helpers live in tests/e2e/helpers.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import anthropic_config
from tests.e2e.helpers import Setup, run, stop_sidecar


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
    fake = FakeAnthropic()
    async with fake:
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
