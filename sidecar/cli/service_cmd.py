"""`service install|uninstall|status`: start the sidecar at login with the user's service manager."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from sidecar.errors import SidecarError
from sidecar.paths import resolve
from sidecar.service import manager
from sidecar.service.units import (
    PLATFORMS,
    Platform,
    current_platform,
    executable,
    registered_exec,
    render,
)

_PLATFORM = click.option("--platform", "platform_", type=click.Choice(PLATFORMS), default=None, hidden=True,
                         help="Render for another platform (tests, and to inspect the files).")
_EXE = click.option("--executable", "exe_opt", type=click.Path(dir_okay=False), default=None, hidden=True,
                    help="The binary the service runs (default: the installed claude-sidecar).")


def _setup(platform_: str | None, exe_opt: str | None, tray: bool) -> tuple[Platform, Path, list[Any]]:
    platform: Platform = platform_ or current_platform()  # type: ignore[assignment]
    exe = Path(exe_opt).absolute() if exe_opt else executable(platform)
    files = render(platform, exe, resolve(), dict(os.environ), Path.home(), tray=tray)
    return platform, exe, files


def _hand_over() -> None:
    """Stop a daemon the service manager did not start (`claude-sidecar start`), so the
    service's own can bind the port instead of exiting with "already running"."""
    from sidecar.cli.common import find_daemon
    from sidecar.cli.daemon import stop

    if find_daemon(resolve()) is not None:
        click.echo("stopping the running daemon so the service runs it from now on")
        click.get_current_context().invoke(stop)


@click.group()
def service() -> None:
    """Start the sidecar at login (systemd --user, launchd, Task Scheduler)."""


@service.command()
@click.option("--tray/--no-tray", default=sys.platform == "linux", show_default="on Linux",
              help="Also start the tray icon with the graphical session (Linux).")
@click.option("--no-enable", is_flag=True, help="Write the files only; print the commands that would enable them.")
@_PLATFORM
@_EXE
def install(tray: bool, no_enable: bool, platform_: str | None, exe_opt: str | None) -> None:
    """Write the service definition for this binary and (re)start it; safe to run again."""
    platform, exe, files = _setup(platform_, exe_opt, tray)
    report = manager.Report()
    manager.write_files(platform, files, exe, report)
    cmds = manager.enable_commands(platform, files)
    why_not = "--no-enable" if no_enable else (
        "another platform" if platform != current_platform() else manager.manager_available(platform)
    )
    if why_not is None:
        _hand_over()
        report.enabled = manager.run_commands(cmds, report)
    for line in report.lines:
        click.echo(line)
    for w in report.warnings:
        click.echo(f"warning: {w}", err=True)
    if why_not is not None:
        click.echo(f"not enabled ({why_not}); to enable it later, run:")
        for line in manager.quoted(cmds):
            click.echo(f"  {line}")
    elif not report.enabled:
        raise SidecarError("the service files are written but could not be enabled (see the warnings above)")
    else:
        click.echo(f"claude-sidecar now starts at login and runs {exe}")


@service.command()
@click.option("--no-enable", "no_disable", is_flag=True, help="Remove the files without asking the manager first.")
@_PLATFORM
def uninstall(no_disable: bool, platform_: str | None) -> None:
    """Stop and unregister the service and remove its files; safe to run again."""
    platform: Platform = platform_ or current_platform()  # type: ignore[assignment]
    files = [f for f in render(platform, Path("claude-sidecar"), resolve(), dict(os.environ), Path.home(), tray=True)
             if f.path.exists()]
    if not files:
        click.echo("no service is installed")
        return
    report = manager.Report()
    if not no_disable and platform == current_platform() and manager.manager_available(platform) is None:
        manager.run_commands(manager.disable_commands(platform, files), report)
    for f in files:
        f.path.unlink()
        report.lines.append(f"removed {f.path}")
    if platform == "linux" and not no_disable and manager.manager_available(platform) is None:
        manager.run_commands([["systemctl", "--user", "daemon-reload"]], report)
    for line in report.lines:
        click.echo(line)
    for w in report.warnings:
        click.echo(f"warning: {w}", err=True)


def service_status(platform: Platform, exe: Path | None) -> dict[str, Any]:
    """Which definitions exist, which binary each runs, whether that is `exe`, and the manager's view."""
    files = render(platform, exe or Path("claude-sidecar"), resolve(), dict(os.environ), Path.home(), tray=True)
    out: dict[str, Any] = {"platform": platform, "executable": str(exe) if exe else None, "files": []}
    for f in files:
        present = f.path.exists()
        runs = registered_exec(platform, f.path.read_bytes()) if present else None
        out["files"].append({"role": f.role, "path": str(f.path), "installed": present, "runs": runs,
                             "current": present and exe is not None and runs == str(exe)})
    out["installed"] = any(f["installed"] for f in out["files"] if f["role"] == "daemon")
    available = platform == current_platform() and manager.manager_available(platform) is None
    out["state"] = manager.service_state(platform) if available else None
    return out


@service.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@_PLATFORM
@_EXE
def status(as_json: bool, platform_: str | None, exe_opt: str | None) -> None:
    """Whether the service is installed, which binary it runs, and whether it is running."""
    platform: Platform = platform_ or current_platform()  # type: ignore[assignment]
    try:
        exe: Path | None = Path(exe_opt).absolute() if exe_opt else executable(platform)
    except SidecarError:
        exe = None
    s = service_status(platform, exe)
    if as_json:
        click.echo(json.dumps(s, indent=2))
    else:
        for f in s["files"]:
            if not f["installed"]:
                click.echo(f"{f['role']}: not installed ({f['path']})")
                continue
            note = "" if f["current"] else f"  (warning: not this binary, {exe}; run `claude-sidecar service install`)"
            click.echo(f"{f['role']}: {f['path']} runs {f['runs']}{note}")
        if s["state"] is not None:
            click.echo(f"state: {s['state']}")
    if not s["installed"]:
        sys.exit(1)


COMMANDS = [service]
