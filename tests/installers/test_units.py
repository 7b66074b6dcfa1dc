"""Each installer rendered and checked by the tool that reads it: systemd-analyze, plistlib, an XML parser."""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys
import tomllib
from pathlib import Path
from xml.etree import ElementTree

from sidecar.paths import resolve
from sidecar.service.units import TASK_NS, executable, registered_exec, render
from sidecar.testing.requirements import require_tool

EXE = Path(sys.executable).parent / "claude-sidecar"


def _env() -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "USERNAME": "dev"}


def test_executable_is_the_installed_script_beside_this_interpreter() -> None:
    assert executable("linux") == EXE.absolute()
    assert EXE.is_file() and os.access(EXE, os.X_OK)


def test_systemd_units_pass_systemd_analyze_verify(home: Path, tmp_path: Path) -> None:
    require_tool("systemd-analyze", "./scripts/test installs Debian's systemd")
    files = render("linux", EXE, resolve(), _env(), home)
    assert [f.path.name for f in files] == ["claude-sidecar.service", "claude-sidecar-tray.service"]
    for f in files:
        f.path.parent.mkdir(parents=True, exist_ok=True)
        f.path.write_bytes(f.content)
    daemon = files[0].content.decode()
    assert f"ExecStart={EXE} start --foreground" in daemon
    assert "Restart=on-failure" in daemon and "StartLimitBurst=" in daemon and "NoNewPrivileges=yes" in daemon
    assert "WantedBy=default.target" in daemon
    tray = files[1].content.decode()
    assert "PartOf=graphical-session.target" in tray and "WantedBy=graphical-session.target" in tray
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(run_dir), "SYSTEMD_LOG_LEVEL": "notice"}
    res = subprocess.run(
        ["systemd-analyze", "verify", "--user", *[str(f.path) for f in files]],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    # A misspelt key or value is only a warning (exit 0): the output must be empty too.
    assert res.returncode == 0 and res.stdout + res.stderr == "", res.stdout + res.stderr


def test_systemd_quotes_a_path_with_spaces_and_percent(home: Path) -> None:
    exe = Path("/opt/my tools/100%/claude-sidecar")
    unit = render("linux", exe, resolve(), _env(), home, tray=False)[0]
    assert 'ExecStart="/opt/my tools/100%%/claude-sidecar" start --foreground' in unit.content.decode()
    assert registered_exec("linux", unit.content) == str(exe)


def test_launchd_plist_round_trips_with_the_keys_launchd_needs(home: Path) -> None:
    exe = Path("/Users/dev/.local/bin/claude-sidecar & <co>")  # escaped, not broken
    [f] = render("macos", exe, resolve(), _env(), home)
    assert f.path == home / "Library" / "LaunchAgents" / "dev.claude-sidecar.daemon.plist"
    plist = plistlib.loads(f.content)
    assert plist["Label"] == "dev.claude-sidecar.daemon"
    assert plist["ProgramArguments"] == [str(exe), "start", "--foreground"]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}  # restarted after a crash only
    log_dir = resolve().log_dir
    assert Path(plist["StandardErrorPath"]).parent == log_dir == Path(plist["StandardOutPath"]).parent
    assert plist["EnvironmentVariables"]["PATH"].split(":")[0] == str(exe.parent)
    assert plistlib.loads(plistlib.dumps(plist)) == plist
    assert registered_exec("macos", f.content) == str(exe)


def test_windows_task_is_valid_task_scheduler_xml(home: Path) -> None:
    exe = Path(r"C:\Users\dev\.local\bin\claude-sidecarw.exe")
    [f] = render("windows", exe, resolve(), {**_env(), "USERDOMAIN": "CORP"}, home)
    assert f.content.startswith(b"\xff\xfe")  # UTF-16 with its byte-order mark, as schtasks /XML wants
    root = ElementTree.fromstring(f.content)
    ns = {"t": TASK_NS}
    assert root.tag == f"{{{TASK_NS}}}Task"
    assert root.findtext("t:Triggers/t:LogonTrigger/t:UserId", namespaces=ns) == r"CORP\dev"
    assert root.findtext("t:Actions/t:Exec/t:Command", namespaces=ns) == str(exe)
    assert root.findtext("t:Actions/t:Exec/t:Arguments", namespaces=ns) == "start --foreground"
    assert root.findtext("t:Settings/t:Hidden", namespaces=ns) == "true"
    assert root.findtext("t:Settings/t:ExecutionTimeLimit", namespaces=ns) == "PT0S"  # never killed for running long
    assert root.find("t:Settings/t:RestartOnFailure/t:Count", namespaces=ns) is not None
    assert registered_exec("windows", f.content) == str(exe)


def test_windows_runs_the_windowless_gui_script() -> None:
    """The task runs claude-sidecarw.exe, a gui-scripts entry point: no console window at logon."""
    assert executable("windows").name == "claude-sidecarw.exe"
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert project["project"]["gui-scripts"]["claude-sidecarw"] == project["project"]["scripts"]["claude-sidecar"]
