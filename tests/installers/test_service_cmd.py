"""`claude-sidecar service install|uninstall|status` into a temporary HOME, with a recording
`systemctl` on PATH standing in for the user's service manager."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sidecar.cli import cli

EXE = str(Path(sys.executable).parent / "claude-sidecar")
FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "{log}"
case "$*" in
  *is-active*) echo active ;;
esac
exit 0
"""


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["service", *args])


@pytest.fixture
def systemctl(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `systemctl` that records its arguments (one call a line) and succeeds."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    log = tmp_path / "systemctl.log"
    script = bindir / "systemctl"
    script.write_text(FAKE_SYSTEMCTL.format(log=log))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(sys, "platform", "linux")
    return log


def _calls(log: Path) -> list[str]:
    return [c for c in log.read_text().splitlines() if c != "--user show-environment"] if log.exists() else []


def test_install_writes_the_units_and_is_idempotent(home: Path) -> None:
    unit = home / ".config" / "systemd" / "user" / "claude-sidecar.service"
    first = _run("install", "--no-enable", "--platform", "linux", "--tray")
    assert first.exit_code == 0, first.output
    assert f"wrote {unit}" in first.output
    assert "not enabled (--no-enable)" in first.output and "systemctl --user enable claude-sidecar.service" in first.output
    content = unit.read_bytes()
    assert f"ExecStart={EXE} start --foreground".encode() in content
    second = _run("install", "--no-enable", "--platform", "linux", "--tray")
    assert second.exit_code == 0 and f"unchanged {unit}" in second.output and "wrote" not in second.output
    assert unit.read_bytes() == content


def test_install_enables_and_restarts_so_an_update_runs_the_new_code(systemctl: Path) -> None:
    res = _run("install", "--tray")
    assert res.exit_code == 0, res.output
    expected = [
        "--user daemon-reload",
        "--user enable claude-sidecar.service claude-sidecar-tray.service",
        "--user restart claude-sidecar.service",
        "--user try-restart claude-sidecar-tray.service",
    ]
    assert _calls(systemctl) == expected
    assert "now starts at login" in res.output
    systemctl.unlink()
    again = _run("install", "--tray")  # the installer run again after an update
    assert again.exit_code == 0 and "unchanged" in again.output
    assert "--user restart claude-sidecar.service" in _calls(systemctl)


def test_install_hands_a_running_daemon_over_to_the_service(systemctl: Path, hermetic_env: Path) -> None:
    from sidecar.testing.harness import start_child

    child = start_child(hermetic_env, "[server]\nport = 0\n")
    try:
        res = _run("install", "--no-tray")
        assert res.exit_code == 0, res.output
        assert "stopping the running daemon" in res.output and f"stopped (pid {child.proc.pid})" in res.output
        assert child.proc.wait(timeout=10) == 0  # stopped cleanly before systemd started its own
        assert "--user restart claude-sidecar.service" in _calls(systemctl)
    finally:
        child.stop()


def test_install_warns_when_the_service_ran_another_binary(home: Path) -> None:
    old = "/opt/old-venv/bin/claude-sidecar"
    assert _run("install", "--no-enable", "--platform", "linux", "--executable", old).exit_code == 0
    status = _run("status", "--platform", "linux")
    assert status.exit_code == 0
    assert f"runs {old}" in status.output and "warning: not this binary" in status.output
    res = _run("install", "--no-enable", "--platform", "linux")
    assert res.exit_code == 0
    assert f"warning: {home}/.config/systemd/user/claude-sidecar.service ran {old}; it now runs {EXE}" in res.output
    s = json.loads(_run("status", "--json", "--platform", "linux").output)
    daemon = next(f for f in s["files"] if f["role"] == "daemon")
    assert daemon == {**daemon, "installed": True, "runs": EXE, "current": True}


def test_uninstall_disables_and_removes_and_is_idempotent(systemctl: Path, home: Path) -> None:
    assert _run("install", "--tray").exit_code == 0
    systemctl.unlink()
    res = _run("uninstall")
    assert res.exit_code == 0, res.output
    assert _calls(systemctl) == [
        "--user disable --now claude-sidecar.service claude-sidecar-tray.service",
        "--user daemon-reload",
    ]
    assert not list((home / ".config" / "systemd" / "user").iterdir())
    assert "no service is installed" in _run("uninstall").output
    assert _run("status").exit_code == 1


def test_without_a_user_manager_the_files_are_written_and_the_commands_printed(home: Path, tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "nobus"
    bindir.mkdir()
    (bindir / "systemctl").write_text("#!/bin/sh\necho 'Failed to connect to bus: No medium found' >&2\nexit 1\n")
    (bindir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(sys, "platform", "linux")
    res = _run("install")
    assert res.exit_code == 0, res.output
    assert "not enabled (systemctl --user does not answer: Failed to connect to bus" in res.output
    assert (home / ".config" / "systemd" / "user" / "claude-sidecar.service").exists()


def test_install_for_macos_and_windows_writes_their_files(home: Path) -> None:
    res = _run("install", "--platform", "macos")
    assert res.exit_code == 0 and "launchctl bootstrap" in res.output  # another platform: never run
    assert (home / "Library" / "LaunchAgents" / "dev.claude-sidecar.daemon.plist").exists()
    res = _run("install", "--platform", "windows")
    assert res.exit_code == 0 and "schtasks /Create /TN claude-sidecar /XML" in res.output
