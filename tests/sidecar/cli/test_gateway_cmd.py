"""How `run` decides to sign Claude Code in to the sidecar, hands the token over and passes
the managed settings (`login-approve` runs in tests/e2e/test_claude_code_gateway_signin.py)."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from sidecar.cli import gateway_cmd
from sidecar.cli.common import Daemon
from sidecar.errors import SidecarError

OWN_KEYS = {"providers": [{"credentials": "keyring:anthropic"}, {"credentials": "env:OPENAI"}]}
FORWARDS = {"providers": [{"credentials": "client"}, {"credentials": "keyring:openai"}]}


def fake_claude(tmp_path: Path, version: str, name: str = "claude") -> str:
    """An executable that answers `--version` like Claude Code."""
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\necho '{version} (Claude Code)'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.parametrize(
    ("version", "status", "name", "signed_in"),
    [
        ("2.1.332", OWN_KEYS, "claude", True),
        ("2.1.225", OWN_KEYS, "claude", True),
        ("2.1.224", OWN_KEYS, "claude", False),  # too old to show a gateway's spend cap
        ("2.1.197", OWN_KEYS, "claude", False),
        ("2.1.332", FORWARDS, "claude", False),  # a provider needs the client's own credentials
        ("2.1.332", OWN_KEYS, "python3", False),  # not Claude Code
    ],
)
def test_run_signs_in_only_a_recent_claude_when_the_sidecar_holds_every_key(
    tmp_path: Path, version: str, status: dict[str, Any], name: str, signed_in: bool
) -> None:
    cmd = (fake_claude(tmp_path, version, name), "-p", "hi")
    assert gateway_cmd.wants_gateway(cmd, status, {}) is signed_in


def test_the_mode_can_be_forced_and_a_forced_sign_in_says_why_it_cannot(tmp_path: Path) -> None:
    old = (fake_claude(tmp_path, "2.1.197"),)
    assert gateway_cmd.wants_gateway(old, OWN_KEYS, {"CLAUDE_SIDECAR_CONNECT": "gateway"}) is True
    assert gateway_cmd.wants_gateway((fake_claude(tmp_path, "2.1.332"),), OWN_KEYS, {"CLAUDE_SIDECAR_CONNECT": "base-url"}) is False
    with pytest.raises(SidecarError, match="needs every provider to hold its own key"):
        gateway_cmd.wants_gateway(old, FORWARDS, {"CLAUDE_SIDECAR_CONNECT": "gateway"})
    with pytest.raises(SidecarError, match="must be one of"):
        gateway_cmd.wants_gateway(old, OWN_KEYS, {"CLAUDE_SIDECAR_CONNECT": "yes"})


def test_the_token_is_handed_over_on_an_inheritable_socket_not_in_the_environment() -> None:
    fd = gateway_cmd.token_socket("csgw_handed-over")
    try:
        assert os.get_inheritable(fd)
        assert stat.S_ISSOCK(os.fstat(fd).st_mode)  # Claude Code takes a token only from a socket
        with socket.socket(fileno=os.dup(fd)) as s:
            assert s.recv(100) == b"csgw_handed-over\n" and s.recv(100) == b""  # then end of stream
    finally:
        os.close(fd)


class Stub(Daemon):
    def __init__(self, answers: dict[tuple[str, str], Any]) -> None:
        super().__init__({"url": "http://127.0.0.1:8787", "pid": 1}, "local")
        self.answers = answers

    def call(self, method: str, path: str, timeout: float = 5.0) -> Any:
        answer = self.answers[(method, path)]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_gateway_env_drops_the_users_credentials_and_names_the_descriptor() -> None:
    d = Stub({("POST", "/sidecar/v1/gateway/token"): {"access_token": "csgw_x", "expires_in": 86400}})
    env, fds, _ = gateway_cmd.gateway_env(d, {"PATH": "/bin", "ANTHROPIC_API_KEY": "sk-ant-mine", "ANTHROPIC_CUSTOM_HEADERS": "x-sidecar-token: t"})
    try:
        assert env == {"PATH": "/bin", "CLAUDE_CODE_USE_GATEWAY": "1", "ANTHROPIC_BASE_URL": "http://127.0.0.1:8787",
                       "CLAUDE_CODE_GATEWAY_TOKEN_FILE_DESCRIPTOR": str(fds[0])}  # fmt: skip
        assert "csgw_x" not in json.dumps(env)
    finally:
        for fd in fds:
            os.close(fd)


def test_run_passes_the_settings_to_claude_only() -> None:
    settings = {"permissions": {"deny": ["Bash"]}}
    d = Stub({("GET", "/managed/settings"): {"uuid": "u", "checksum": "sha256:x", "settings": settings}})
    assert gateway_cmd.with_settings(("/opt/bin/claude", "-p", "hi"), d) == ("/opt/bin/claude", "--settings", '{"permissions":{"deny":["Bash"]}}', "-p", "hi")
    assert gateway_cmd.with_settings(("python3", "x.py"), d) == ("python3", "x.py")
    assert gateway_cmd.with_settings(("claude", "--settings", "mine.json"), d) == ("claude", "--settings", "mine.json")
    none = Stub({("GET", "/managed/settings"): urllib.error.HTTPError("u", 404, "no", {}, io.BytesIO())})  # type: ignore[arg-type]
    assert gateway_cmd.with_settings(("claude",), none) == ("claude",)


def test_run_points_claude_codes_telemetry_at_the_sidecar_unless_the_user_set_it_up() -> None:
    d = Stub({})
    env = gateway_cmd.with_telemetry(("claude",), {"PATH": "/bin"}, d, "x-api-key=csgw_t")
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:8787" and env["CLAUDE_CODE_ENABLE_TELEMETRY"] == "1"
    assert env["OTEL_EXPORTER_OTLP_HEADERS"] == "x-api-key=csgw_t" and env["OTEL_LOGS_EXPORTER"] == "otlp"
    own = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example"}
    assert gateway_cmd.with_telemetry(("claude",), own, d, None) == own
    assert gateway_cmd.with_telemetry(("python3",), {}, d, None) == {}
    assert "OTEL_EXPORTER_OTLP_HEADERS" not in gateway_cmd.with_telemetry(("claude",), {}, d, None)


def test_a_sidecar_that_fails_to_give_the_settings_is_one_line_not_a_traceback() -> None:
    broken = Stub({("GET", "/managed/settings"): urllib.error.HTTPError("u", 500, "boom", {}, io.BytesIO())})  # type: ignore[arg-type]
    with pytest.raises(SidecarError, match="did not give the managed settings \\(HTTP 500\\)"):
        gateway_cmd.with_settings(("claude",), broken)


def test_env_signs_in_the_claude_on_path_with_a_token_in_the_shell(tmp_path: Path) -> None:
    d = Stub({("GET", "/sidecar/v1/status"): {**OWN_KEYS, "providers": [{"credentials": "keyring:anthropic", "type": "anthropic"}]},
              ("POST", "/sidecar/v1/gateway/token"): {"access_token": "csgw_shell", "expires_in": 86400}})  # fmt: skip
    fake_claude(tmp_path, "2.1.332")
    environ = {"PATH": str(tmp_path), "ANTHROPIC_CUSTOM_HEADERS": "X-Team: a\nx-sidecar-token: old"}
    env = gateway_cmd.shell_env(d, environ)
    assert env is not None
    assert (env["CLAUDE_CODE_USE_GATEWAY"], env["ANTHROPIC_AUTH_TOKEN"], env["ANTHROPIC_BASE_URL"]) == ("1", "csgw_shell", "http://127.0.0.1:8787")
    assert env["ANTHROPIC_CUSTOM_HEADERS"] == "X-Team: a"  # the local token's line is not needed signed in
    old = tmp_path / "old"
    old.mkdir()
    fake_claude(old, "2.1.197")
    assert gateway_cmd.shell_env(d, {"PATH": str(old)}) is None  # too old: base-URL mode
    assert gateway_cmd.shell_env(d, {"PATH": str(tmp_path / "nowhere")}) is None  # no claude on PATH
