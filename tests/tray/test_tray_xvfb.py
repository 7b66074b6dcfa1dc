"""`claude-sidecar tray` under Xvfb with pystray's xorg backend, against a real sidecar.

The icon is watched from outside, as the desktop sees it: a small system tray
(systray_host.py) docks it, its title is the window's WM_NAME and its picture is the
window's pixels. The tray must show the sidecar down, then up, then today's spend after
a request, open the dashboard when clicked, show the sidecar down again when it stops,
and refuse cleanly where it cannot run.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from sidecar.testing.fake_anthropic import FakeAnthropic, Text
from sidecar.testing.harness import anthropic_config, start_child
from tests.tray.conftest import eventually, post_message, shows, tray_env
from tests.tray.x11 import ROOT, SystemTray, Xvfb
from tray.state import TrayState, down

# Opus 4.8: $5/M input, $25/M output: $3.00 for this request.
USAGE = {"input_tokens": 400_000, "output_tokens": 40_000}


@dataclass
class Run:
    rc: int
    out: str
    err: str


async def run_tray_once(display: str | None) -> Run:
    """Run `claude-sidecar tray` where it must refuse, and collect what it said."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "tray", cwd=ROOT, env=tray_env(display),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def unused_display() -> str:
    """A display number no X server listens on."""
    n = next(n for n in range(5000, 6000) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    return f":{n}"


async def test_the_icon_follows_the_sidecar(
    systray: SystemTray,
    tray_process: subprocess.Popen[bytes],
    fake: FakeAnthropic,
    hermetic_env: Path,
    client: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    [icon] = await eventually(systray.icons, "the tray icon to dock")
    await shows(systray, icon, "claude-sidecar: not running", down("not running"))

    child = await asyncio.to_thread(start_child, hermetic_env, anthropic_config(fake.url))
    try:
        await shows(
            systray, icon, "claude-sidecar: $0.00 today · $0.00 this month", TrayState(running=True)
        )

        fake.script(Text("hi", usage=USAGE))
        await post_message(client, child.url)
        spent = TrayState(running=True, today_usd=3.0)
        await shows(systray, icon, "claude-sidecar: $3.00 today · $3.00 this month", spent)

        systray.click(icon)  # xorg has no menu: a click runs the default item, the dashboard
        args = tmp_path / "terminal.args"
        tui = ["-e", sys.executable, "-m", "sidecar", "tui"]
        await eventually(
            lambda: args.exists() and args.read_text().splitlines() == tui,
            "a terminal running the TUI",
        )
    finally:
        assert child.stop() == 0
    await shows(systray, icon, "claude-sidecar: not running", down("not running"))

    tray_process.send_signal(signal.SIGTERM)
    rc = await asyncio.to_thread(tray_process.wait, 30)
    assert rc == 0, (tmp_path / "tray.log").read_text()
    assert systray.icons() == []  # it took its window with it


async def test_it_refuses_without_a_display_or_a_tray(xvfb: Xvfb) -> None:
    no_display, no_tray, unreachable = await asyncio.gather(
        run_tray_once(None), run_tray_once(xvfb.display), run_tray_once(nobody := unused_display())
    )

    assert (no_display.rc, no_display.out) == (1, "")
    assert no_display.err == (
        "error: no display: the tray needs a graphical session (DISPLAY and WAYLAND_DISPLAY are unset); "
        "use claude-sidecar status or claude-sidecar tui instead\n"
    )
    assert (no_tray.rc, no_tray.out) == (1, "")
    assert no_tray.err.startswith(
        "error: no system tray on this display (nothing owns _NET_SYSTEM_TRAY_S0)"
    )
    assert no_tray.err.count("\n") == 1
    assert (unreachable.rc, unreachable.out) == (1, "")
    assert unreachable.err.startswith(
        f'error: no tray support in this session: Can\'t connect to display "{nobody}"'
    )
    assert unreachable.err.count("\n") == 1
