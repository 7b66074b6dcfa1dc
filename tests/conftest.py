"""Hermetic tests: a private CLAUDE_SIDECAR_HOME, no proxies, no real keyring or API keys."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from sidecar.testing.fake_anthropic import FakeAnthropic

STRIP_PREFIXES = ("ANTHROPIC_", "CLAUDE_SIDECAR_", "CLAUDE_CODE_")
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
KEEP = {"CLAUDE_SIDECAR_CLAUDE_BIN"}  # where the test command installed the Claude Code CLI


@pytest.fixture(autouse=True)
def hermetic_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point every sidecar path at a temp dir and keep the developer's environment out."""
    for name in list(os.environ):
        if name in KEEP:
            continue
        if name.startswith(STRIP_PREFIXES) or name.upper() in PROXY_VARS:
            monkeypatch.delenv(name)
    home = tmp_path / "sidecar-home"
    monkeypatch.setenv("CLAUDE_SIDECAR_HOME", str(home))
    # A recent `claude` on the developer's PATH must not turn `env`/`run` into gateway sign-in;
    # the sign-in tests ask for it themselves.
    monkeypatch.setenv("CLAUDE_SIDECAR_CONNECT", "base-url")
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "sidecar.testing.keyring_backend.FileKeyring")
    monkeypatch.setenv("CLAUDE_SIDECAR_TEST_KEYRING", str(tmp_path / "test-keyring.json"))
    import keyring
    import keyring.core

    keyring.core._keyring_backend = None  # re-read PYTHON_KEYRING_BACKEND for this test
    yield home
    keyring.core._keyring_backend = None


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    """A fake Anthropic upstream in this test's loop."""
    async with FakeAnthropic() as f:
        yield f


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session, closed after the test."""
    async with aiohttp.ClientSession() as s:
        yield s
