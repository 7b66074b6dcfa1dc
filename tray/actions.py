"""What the menu's actions run: the dashboard in a terminal, the log file, start and stop.

The commands are built by plain functions (`terminal_command`, `opener_command`) that take
the platform and a `which` lookup, so each platform's choice is testable anywhere.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

Which = Callable[[str], str | None]
START_TIMEOUT = 60.0

# Terminal emulators in the order they are tried, each with the flag that runs a command.
# x-terminal-emulator is Debian's choice of the user's default.
TERMINALS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("x-terminal-emulator", ("-e",)),
    ("gnome-terminal", ("--",)),
    ("konsole", ("-e",)),
    ("xfce4-terminal", ("-x",)),
    ("kitty", ()),
    ("alacritty", ("-e",)),
    ("foot", ()),
    ("wezterm", ("start", "--")),
    ("xterm", ("-e",)),
)


class ActionFailed(Exception):
    """A menu action could not be done; the message says what to do instead."""


def sidecar_command(*args: str) -> list[str]:
    """`claude-sidecar ARGS` run with this interpreter (no PATH lookup needed)."""
    return [sys.executable, "-m", "sidecar", *args]


def terminal_command(
    argv: Sequence[str],
    platform: str = sys.platform,
    env: Mapping[str, str] | None = None,
    which: Which = shutil.which,
) -> list[str] | None:
    """A command that opens a terminal window running `argv`, or None when there is no terminal."""
    if platform == "darwin":
        script = shlex.join(argv).replace("\\", "\\\\").replace('"', '\\"')
        return [
            "osascript",
            "-e",
            f'tell application "Terminal" to do script "{script}"',
            "-e",
            'tell application "Terminal" to activate',
        ]
    if platform == "win32":
        return ["cmd", "/c", "start", "claude-sidecar", *argv]
    env = os.environ if env is None else env
    preferred = env.get("TERMINAL")
    if preferred and which(preferred):
        flags = next((f for name, f in TERMINALS if name == Path(preferred).name), ("-e",))
        return [preferred, *flags, *argv]
    for name, flags in TERMINALS:
        if which(name):
            return [name, *flags, *argv]
    return None


def opener_command(
    path: Path, platform: str = sys.platform, which: Which = shutil.which
) -> list[str] | None:
    """A command that opens `path` in the desktop's default application (None on Windows)."""
    if platform == "darwin":
        return ["open", str(path)]
    if platform == "win32":
        return None  # os.startfile does it
    return ["xdg-open", str(path)] if which("xdg-open") else None


def open_tui() -> None:
    """Open `claude-sidecar tui` in a new terminal window."""
    cmd = terminal_command(sidecar_command("tui"))
    if cmd is None:
        raise ActionFailed("no terminal emulator found (set TERMINAL); run: claude-sidecar tui")
    _spawn(cmd)


def open_logs(log_file: Path) -> None:
    """Open the sidecar's log file."""
    if not log_file.exists():
        raise ActionFailed(f"no log yet at {log_file} (a foreground sidecar logs to its terminal)")
    if sys.platform == "win32":
        os.startfile(log_file)  # type: ignore[attr-defined,unused-ignore]
        return
    cmd = opener_command(log_file)
    if cmd is None:
        raise ActionFailed(f"no program to open files (xdg-open); the log is {log_file}")
    _spawn(cmd)


def start_sidecar() -> None:
    """Run `claude-sidecar start` (it returns once the daemon is healthy)."""
    try:
        done = subprocess.run(
            sidecar_command("start"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise ActionFailed(
            f"claude-sidecar start did not finish in {START_TIMEOUT:.0f} s"
        ) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise ActionFailed(f"claude-sidecar start failed: {last.removeprefix('error: ')}")


def _spawn(cmd: list[str]) -> None:
    """Start `cmd` detached from the tray, so closing one leaves the other running."""
    try:
        subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as e:
        raise ActionFailed(f"could not run {cmd[0]}: {e.strerror or e}") from None
