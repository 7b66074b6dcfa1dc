"""How the menu's actions open a terminal or a file on each platform."""

from __future__ import annotations

from pathlib import Path

import pytest

from tray.actions import ActionFailed, open_logs, opener_command, sidecar_command, terminal_command

TUI = ["/usr/bin/python3", "-m", "sidecar", "tui"]


def which_of(*present: str):  # type: ignore[no-untyped-def]
    return lambda name: f"/usr/bin/{name}" if name in present else None


def test_sidecar_command_uses_this_interpreter() -> None:
    import sys

    assert sidecar_command("tui") == [sys.executable, "-m", "sidecar", "tui"]


@pytest.mark.parametrize(
    ("present", "env", "expected"),
    [
        (("x-terminal-emulator", "xterm"), {}, ["x-terminal-emulator", "-e", *TUI]),
        (("gnome-terminal", "xterm"), {}, ["gnome-terminal", "--", *TUI]),
        (("konsole",), {}, ["konsole", "-e", *TUI]),
        (("xfce4-terminal",), {}, ["xfce4-terminal", "-x", *TUI]),
        (("kitty", "xterm"), {}, ["kitty", *TUI]),
        (("wezterm",), {}, ["wezterm", "start", "--", *TUI]),
        (("xterm", "kitty"), {"TERMINAL": "kitty"}, ["kitty", *TUI]),
        (("xterm", "st"), {"TERMINAL": "st"}, ["st", "-e", *TUI]),
        (("xterm",), {"TERMINAL": "missing-terminal"}, ["xterm", "-e", *TUI]),
    ],
)
def test_terminal_on_linux(
    present: tuple[str, ...], env: dict[str, str], expected: list[str]
) -> None:
    assert terminal_command(TUI, "linux", env, which_of(*present)) == expected


def test_no_terminal_at_all() -> None:
    assert terminal_command(TUI, "linux", {}, which_of()) is None


def test_terminal_on_macos_and_windows() -> None:
    mac = terminal_command(
        ["/opt/my python/bin/python", "-m", "sidecar", "tui"], "darwin", {}, which_of()
    )
    win = terminal_command(TUI, "win32", {}, which_of())

    assert mac is not None and mac[0] == "osascript"
    assert (
        mac[2]
        == 'tell application "Terminal" to do script "\'/opt/my python/bin/python\' -m sidecar tui"'
    )
    assert win == ["cmd", "/c", "start", "claude-sidecar", *TUI]


def test_opener() -> None:
    log = Path("/tmp/x/sidecar.log")

    assert opener_command(log, "linux", which_of("xdg-open")) == ["xdg-open", str(log)]
    assert opener_command(log, "linux", which_of()) is None
    assert opener_command(log, "darwin", which_of()) == ["open", str(log)]
    assert opener_command(log, "win32", which_of()) is None


def test_open_logs_without_a_log_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "logs" / "sidecar.log"

    with pytest.raises(ActionFailed, match=f"no log yet at {missing}"):
        open_logs(missing)
