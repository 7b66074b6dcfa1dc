"""What `env` and `run` give Claude Code: the local token in a header of its own
(ANTHROPIC_CUSTOM_HEADERS, merged with the user's), never in ANTHROPIC_AUTH_TOKEN where it
would replace a Claude subscription login and be forwarded to Anthropic."""

from __future__ import annotations

import io
import urllib.error
from email.message import Message
from typing import Any

import pytest
from click.testing import CliRunner

from sidecar.cli import daemon
from sidecar.cli.common import Daemon

TOKEN = "local-token-abc"


class StubDaemon(Daemon):
    """A daemon whose status names these providers' credentials."""

    def __init__(self, credentials: list[str], required: bool = True) -> None:
        super().__init__({"url": "http://127.0.0.1:8787", "pid": 1}, TOKEN)
        self.status = {"token_required_on_proxy": required, "providers": [{"credentials": c} for c in credentials]}

    def call(self, method: str, path: str, timeout: float = 5.0) -> Any:
        if (method, path) == ("GET", "/managed/settings"):  # `run -- claude` asks for [claude_code.settings]
            raise urllib.error.HTTPError(self.url + path, 404, "no managed settings", Message(), io.BytesIO())
        assert (method, path) == ("GET", "/sidecar/v1/status")
        return self.status


def test_without_injected_keys_only_the_base_url_is_set() -> None:
    assert daemon.client_env(StubDaemon(["client"], required=False), {}) == {"ANTHROPIC_BASE_URL": "http://127.0.0.1:8787"}


def test_a_subscription_login_is_kept_when_another_provider_holds_a_key() -> None:
    env = daemon.client_env(StubDaemon(["client", "keyring:openai"]), {})
    assert env == {"ANTHROPIC_BASE_URL": "http://127.0.0.1:8787", "ANTHROPIC_CUSTOM_HEADERS": f"x-sidecar-token: {TOKEN}"}


def test_the_users_own_custom_headers_are_kept_and_a_stale_token_replaced() -> None:
    mine = "X-Team: search\nx-sidecar-token: old-token\nAnthropic-Beta: foo"
    env = daemon.client_env(StubDaemon(["client", "env:OPENAI_KEY"]), {"ANTHROPIC_CUSTOM_HEADERS": mine})
    assert env["ANTHROPIC_CUSTOM_HEADERS"] == f"X-Team: search\nAnthropic-Beta: foo\nx-sidecar-token: {TOKEN}"


def test_when_no_provider_uses_client_credentials_claude_code_gets_a_placeholder_login() -> None:
    """Claude Code will not start without some credential; no provider forwards it, and the
    placeholder is not the token."""
    env = daemon.client_env(StubDaemon(["keyring:anthropic"]), {})
    assert env["ANTHROPIC_CUSTOM_HEADERS"] == f"x-sidecar-token: {TOKEN}"
    assert env["ANTHROPIC_AUTH_TOKEN"] == daemon.AUTH_PLACEHOLDER != TOKEN
    # A user's own credential is left alone.
    assert "ANTHROPIC_AUTH_TOKEN" not in daemon.client_env(StubDaemon(["keyring:anthropic"]), {"ANTHROPIC_API_KEY": "sk-ant-x"})


def test_a_local_token_left_in_anthropic_auth_token_by_an_older_version_is_removed() -> None:
    env = daemon.client_env(StubDaemon(["client", "keyring:openai"]), {"ANTHROPIC_AUTH_TOKEN": TOKEN})
    assert env["ANTHROPIC_AUTH_TOKEN"] is None


@pytest.mark.parametrize(
    ("shell", "expected"),
    [
        ("sh", "export ANTHROPIC_BASE_URL=http://127.0.0.1:8787\nexport ANTHROPIC_CUSTOM_HEADERS='X-Team: a\nx-sidecar-token: local-token-abc'\nunset ANTHROPIC_AUTH_TOKEN\n"),
        ("fish", "set -gx ANTHROPIC_BASE_URL 'http://127.0.0.1:8787';\nset -gx ANTHROPIC_CUSTOM_HEADERS 'X-Team: a\nx-sidecar-token: local-token-abc';\nset -e ANTHROPIC_AUTH_TOKEN;\n"),
        ("powershell", "$env:ANTHROPIC_BASE_URL = 'http://127.0.0.1:8787'\n$env:ANTHROPIC_CUSTOM_HEADERS = 'X-Team: a\nx-sidecar-token: local-token-abc'\nRemove-Item Env:ANTHROPIC_AUTH_TOKEN -ErrorAction SilentlyContinue\n"),
    ],
)
def test_env_prints_the_headers_for_each_shell(shell: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon, "find_daemon", lambda p: StubDaemon(["client", "keyring:openai"]))
    monkeypatch.setenv("ANTHROPIC_CUSTOM_HEADERS", "X-Team: a")
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", TOKEN)
    out = CliRunner().invoke(daemon.env, ["--shell", shell])
    assert out.exit_code == 0, out.output
    assert out.output == expected


def test_run_passes_the_header_and_drops_the_stale_token(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def execvpe(file: str, args: list[str], env: dict[str, str]) -> None:
        seen.update(file=file, env=env)
        raise SystemExit(0)

    monkeypatch.setattr(daemon, "ensure_running", lambda: (StubDaemon(["client", "keyring:openai"]), False))
    monkeypatch.setattr(daemon.os, "execvpe", execvpe)
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", TOKEN)
    out = CliRunner().invoke(daemon.run, ["claude", "-p", "hi"])
    assert out.exit_code == 0, out.output
    assert seen["file"] == "claude"
    assert seen["env"]["ANTHROPIC_CUSTOM_HEADERS"] == f"x-sidecar-token: {TOKEN}"
    assert "ANTHROPIC_AUTH_TOKEN" not in seen["env"]
