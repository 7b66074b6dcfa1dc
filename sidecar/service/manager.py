"""Write the rendered definitions and register them with the user's service manager.

Idempotent: an unchanged file is left alone, a changed one rewritten, and registering again
restarts the daemon, so re-running the installer after an update runs the new code. Where
the manager cannot be reached (no `systemctl --user` in a container, `--no-enable`) the
files are written and the commands that would enable them are printed instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.paths import replace_file
from sidecar.service.units import (
    LABEL,
    TASK,
    TRAY_UNIT,
    UNIT,
    Platform,
    ServiceFile,
    registered_exec,
)

Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]
TIMEOUT = 30.0


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a service-manager command, capturing its output (never raising on a non-zero exit)."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, check=False)


@dataclass
class Report:
    """What an install or uninstall did, line by line, and what the user should know."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    enabled: bool = False


def write_files(platform: Platform, files: list[ServiceFile], exe: Path, report: Report) -> bool:
    """Write each file that differs; True when any changed. Warns when one named another binary."""
    changed = False
    for f in files:
        old = f.path.read_bytes() if f.path.exists() else None
        if old is not None:
            before = registered_exec(platform, old)
            if before is not None and before != str(exe):
                report.warnings.append(f"{f.path} ran {before}; it now runs {exe}")
        if old == f.content:
            report.lines.append(f"unchanged {f.path}")
            continue
        f.path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(f.path, f.content, mode=0o644)  # a unit or plist the service manager reads
        report.lines.append(f"{'updated' if old is not None else 'wrote'} {f.path}")
        changed = True
    return changed


def enable_commands(platform: Platform, files: list[ServiceFile]) -> list[list[str]]:
    """The commands that register and (re)start the services, in order."""
    if platform == "linux":
        units = [f.path.name for f in files]
        cmds = [["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", *units],
                ["systemctl", "--user", "restart", UNIT]]
        if TRAY_UNIT in units:  # started with the graphical session; restarted only if running
            cmds.append(["systemctl", "--user", "try-restart", TRAY_UNIT])
        return cmds
    if platform == "macos":
        domain = f"gui/{os.getuid()}" if hasattr(os, "getuid") else "gui/501"
        plist = str(files[0].path)
        return [["launchctl", "bootout", f"{domain}/{LABEL}"], ["launchctl", "bootstrap", domain, plist]]
    xml = str(files[0].path)
    return [["schtasks", "/Create", "/TN", TASK, "/XML", xml, "/F"], ["schtasks", "/End", "/TN", TASK],
            ["schtasks", "/Run", "/TN", TASK]]


def disable_commands(platform: Platform, files: list[ServiceFile]) -> list[list[str]]:
    """The commands that stop and unregister the services."""
    if platform == "linux":
        return [["systemctl", "--user", "disable", "--now", *[f.path.name for f in files]]]
    if platform == "macos":
        domain = f"gui/{os.getuid()}" if hasattr(os, "getuid") else "gui/501"
        return [["launchctl", "bootout", f"{domain}/{LABEL}"]]
    return [["schtasks", "/End", "/TN", TASK], ["schtasks", "/Delete", "/TN", TASK, "/F"]]


# Commands whose failure is expected and harmless (the service was not loaded or running).
_TOLERATED = {("launchctl", "bootout"), ("schtasks", "/End")}


def manager_available(platform: Platform, runner: Runner = run) -> str | None:
    """None when the user's service manager answers; else why not."""
    tool = {"linux": "systemctl", "macos": "launchctl", "windows": "schtasks"}[platform]
    if shutil.which(tool) is None:
        return f"{tool} is not on PATH"
    if platform == "linux":
        try:
            res = runner(["systemctl", "--user", "show-environment"])
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"systemctl --user failed: {e}"
        if res.returncode != 0:
            why = (res.stderr or res.stdout).strip().splitlines()
            return "systemctl --user does not answer" + (f": {why[-1]}" if why else "") + \
                "; no user session bus (a container, or ssh without lingering)"
    return None


def run_commands(cmds: list[list[str]], report: Report, runner: Runner = run) -> bool:
    """Run `cmds` in order; False (with the error in the report) at the first real failure."""
    for cmd in cmds:
        try:
            res = runner(cmd)
        except (OSError, subprocess.TimeoutExpired) as e:
            report.warnings.append(f"{' '.join(cmd)} failed: {e}")
            return False
        if res.returncode != 0 and tuple(cmd[:2]) not in _TOLERATED:
            why = (res.stderr or res.stdout).strip()
            report.warnings.append(f"{' '.join(cmd)} exited {res.returncode}: {why}")
            return False
        report.lines.append(f"ran {' '.join(cmd)}")
    return True


def service_state(platform: Platform, runner: Runner = run) -> str:
    """What the manager says about the daemon's service (active, inactive, not loaded, ...)."""
    try:
        if platform == "linux":
            res = runner(["systemctl", "--user", "is-active", UNIT])
            return res.stdout.strip() or "unknown"
        if platform == "macos":
            domain = f"gui/{os.getuid()}" if hasattr(os, "getuid") else "gui/501"
            res = runner(["launchctl", "print", f"{domain}/{LABEL}"])
            return "loaded" if res.returncode == 0 else "not loaded"
        res = runner(["schtasks", "/Query", "/TN", TASK])
        return "registered" if res.returncode == 0 else "not registered"
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"


def quoted(cmds: list[list[str]]) -> list[str]:
    """Commands as lines a user can paste."""
    import shlex

    return [shlex.join(c) for c in cmds]
